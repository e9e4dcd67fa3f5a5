# Throughput per fault scenario (bench/run-faults).
# in: "scenario" p50_ms p99_ms ops_s, one row per (cluster, scenario).
load "bench/report/common.gp"
set terminal pngcairo size 1100,560 enhanced font "DejaVu Sans,10"
set output out
set title "Commits per second with slow nodes, a slow AZ, an AZ down"
set ylabel "ops/s"
set yrange [0:*]
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.85 border -1
set boxwidth 0.8
set xtics rotate by -35 font ",9"
set bmargin 11
set key autotitle columnheader
plot in using 4:xtic(1) lt 3
