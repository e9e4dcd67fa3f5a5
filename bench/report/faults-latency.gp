# Commit latency per fault scenario (bench/run-faults): p50 and p99 bars, log y.
# in: "scenario" p50_ms p99_ms ops_s, one row per (cluster, scenario).
load "bench/report/common.gp"
set terminal pngcairo size 1100,560 enhanced font "DejaVu Sans,10"
set output out
set title "Commit latency with slow nodes, a slow AZ, an AZ down (ms, SET sent -> reply)"
set ylabel "ms (log scale)"
set logscale y
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set xtics rotate by -35 font ",9"
set bmargin 11
set key autotitle columnheader
plot in using 2:xtic(1) lt 1, '' using 3 lt 2
