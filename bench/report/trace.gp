# Where commit time goes (bench/run-trace): per step, offset from the command's receipt, p50 and p99.
# in: "mode: step" p50_us p99_us, one row per step.
load "bench/report/common.gp"
set terminal pngcairo size 1100,560 enhanced font "DejaVu Sans,10"
set output out
set title "Where does commit time go (µs from the command's receipt, sampled commits, writer's view)"
set ylabel "µs (log scale)"
set logscale y
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set xtics rotate by -35 font ",9"
set bmargin 11
set key autotitle columnheader
plot in using 2:xtic(1) lt 1, '' using 3 lt 2
