# Failover timeline per architecture, stacked from the kill -9 of the writer (ms):
# detection (kill -> declared dead), promotion (-> the new writer accepts), first write
# (-> first acknowledged write of the benchmark on the new writer).
# in: architecture detection_ms promotion_ms first_write_ms
load "bench/report/common.gp"
set title "Failover: kill -9 of the writer -> first acknowledged write on the new one (ms)"
set ylabel "ms after the kill"
set xlabel " "
set yrange [0:*]
set style data histogram
set style histogram rowstacked
set style fill solid 0.85 border -1
set boxwidth 0.6
set key outside bottom center horizontal autotitle columnheader
plot in using 2:xtic(1) lt 1, '' using 3 lt 2, '' using 4 lt 3
