# Where commit time goes (bench/run-trace): per step, offset from the command's receipt, p50 and p99.
# in: "mode: step" p50_us p99_us, one row per step (the peers' steps too: "replica ... (1st)", "node ... (4th)").
load "bench/report/common.gp"
set terminal pngcairo size 1500,640 enhanced font "DejaVu Sans,10"
set output out
set title "Where does commit time go (µs from the command's receipt at the writer; writer, replicas, storage nodes and reader, sampled commits)"
set ylabel "µs (log scale)"
set logscale y
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set xtics rotate by -40 font ",8"
set bmargin 13
set rmargin 12
set key autotitle columnheader
plot in using 2:xtic(1) lt 1, '' using 3 lt 2
