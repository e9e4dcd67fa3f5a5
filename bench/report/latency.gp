# Latency percentiles per architecture and clients point (clustered bars, log y).
# in: label p50_ms p99_ms, one row per (architecture, clients).
load "bench/report/common.gp"
set title "Write latency (µs, from sending the SET to its reply)"
set ylabel "µs (log scale)"
set logscale y
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set xtics rotate by -30
set key autotitle columnheader
plot in using 2:xtic(1) lt 1, '' using 3 lt 2
