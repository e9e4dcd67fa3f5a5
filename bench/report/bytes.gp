# Bytes per commit: disk (WAL) and network (replication) for classic, redo and network for aurora.
# in: label bytes_per_commit, one row per measure.
load "bench/report/common.gp"
set title "Bytes per commit (100-byte SET)"
set ylabel "bytes / commit"
set yrange [0:*]
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.85 border -1
set boxwidth 0.8
set xtics rotate by -30
set key off
plot in using 2:xtic(1) lt 1, '' using 0:2:(sprintf("%.0f", $2)) with labels offset 0,0.7 notitle
