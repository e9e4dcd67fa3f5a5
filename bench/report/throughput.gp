# Throughput vs clients, one line per architecture.
# in: "clients" then one column per architecture (header row = names), one row per clients point.
load "bench/report/common.gp"
set title "Write throughput vs clients (SET, 100-byte values, closed loop)"
set xlabel "clients"
set ylabel "acknowledged writes / s"
set logscale x 2
set yrange [0:*]
set key autotitle columnheader
plot for [i=2:*] in using 1:i with linespoints
