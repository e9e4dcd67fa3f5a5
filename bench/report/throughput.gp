# Throughput vs clients, one line per architecture: the median run of each point, error bars from
# the lowest to the highest of the repeated runs (bench/run-demo --repeat N).
# in: "clients" then, per architecture, three columns: median ("name" in the header), min, max.
load "bench/report/common.gp"
set title "Write throughput vs clients (SET, 100-byte values, closed loop; bars: min-max of the runs)"
set xlabel "clients"
set ylabel "acknowledged writes / s"
set logscale x 2
set yrange [0:*]
set offsets graph 0.05, graph 0.05, 0, 0
set lmargin 12
stats in using 0 nooutput
# columns: 1 + 3 per architecture
narch = int((STATS_columns - 1) / 3)
plot for [i=0:narch-1] in using 1:(column(2+3*i)):(column(3+3*i)):(column(4+3*i)) \
     with yerrorlines lt (i+1) title columnhead(2+3*i)
