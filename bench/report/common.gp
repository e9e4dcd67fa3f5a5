# Shared settings for the bench/report/*.gp plots (loaded by each of them).
# Every script is called as: gnuplot -e "in='DATA.dat'; out='PLOT.png'" bench/report/NAME.gp
set terminal pngcairo size 900,520 enhanced font "DejaVu Sans,10"
set output out
set grid ytics lc rgb "#dddddd"
# Legends go below the plot, never over the data or the axis labels.
set key outside bottom center horizontal width 2 samplen 3
set bmargin 5
set lmargin 10
set border 3
set xtics nomirror
set ytics nomirror
set linetype 1 lc rgb "#1f77b4" lw 2 pt 7
set linetype 2 lc rgb "#ff7f0e" lw 2 pt 5
set linetype 3 lc rgb "#2ca02c" lw 2 pt 9
set linetype 4 lc rgb "#d62728" lw 2 pt 11
set linetype 5 lc rgb "#9467bd" lw 2 pt 13
