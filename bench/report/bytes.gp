# Bytes per commit, one colour per kind: the log written to the writer's own disk (classic WAL;
# the aurora writer has none), the bytes sent to one copy (a replica / one storage node), and the
# bytes sent to all copies. One unit (bytes per commit) on the one axis.
# in: architecture, then the three columns (header row = their names); NaN where it does not apply.
load "bench/report/common.gp"
set title "Bytes per commit (100-byte SET)"
set ylabel "bytes per commit"
set yrange [0:*]
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key outside bottom center horizontal autotitle columnheader
plot in using 2:xtic(1) lt 1, '' using 3 lt 2, '' using 4 lt 3
