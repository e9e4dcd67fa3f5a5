# Latency percentiles per architecture and clients point (clustered bars, log y): the median run's
# p50 and p99, error bars from the lowest to the highest of the repeated runs.
# in: label p50 p50_min p50_max p99 p99_min p99_max (µs), one row per (architecture, clients).
load "bench/report/common.gp"
set title "Write latency (µs, from sending the SET to its reply; bars: min-max of the runs)"
set ylabel "µs (log scale)"
set logscale y
set style data histogram
set style histogram errorbars gap 1 lw 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set xtics rotate by -30
set bmargin 7
set key autotitle columnheader
plot in using 2:3:4:xtic(1) lt 1 title "p50", '' using 5:6:7 lt 2 title "p99"
