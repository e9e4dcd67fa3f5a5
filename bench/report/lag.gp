# Replica / reader visibility lag distribution per architecture (p50/p99/max bars, log y).
# in: architecture p50_ms p99_ms max_ms
load "bench/report/common.gp"
set title "Visibility lag: writer's ack -> readable on the replica / reader (ms, log scale)"
set ylabel "ms (log scale)"
set logscale y
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key autotitle columnheader
plot in using 2:xtic(1) lt 1, '' using 3 lt 2, '' using 4 lt 4
