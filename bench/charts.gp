# bench/charts.gp - PNG charts from cask_bench --plot-dir data.
# usage: gnuplot -e "data='DIR'; out='DIR'" bench/charts.gp
# Reads throughput.dat, latency.dat (a column per engine) and ratio.dat.

if (!exists("data")) data = "."
if (!exists("out")) out = "."

set terminal pngcairo size 1500,620 font "DejaVu Sans,10" noenhanced
set datafile separator "\t"
set datafile missing "NaN"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics mytics
set key outside right top vertical
set xtics rotate by -35 scale 0
set logscale y
set format y "%.0s%c"

ncols(f) = int(system(sprintf("head -1 '%s' | awk -F'\t' '{print NF}'", f)))
header(f) = system(sprintf("head -1 '%s' | tr '\t' ' '", f))
# One colour per engine in every chart; cask stands out, the limit reference is grey.
color(e) = e eq "cask" ? "#1f77b4" : e eq "limit" ? "#bbbbbb" : e eq "lmdb" ? "#2ca02c" : \
           e eq "tkrzw" ? "#ff7f0e" : e eq "leveldb" ? "#9467bd" : e eq "rocksdb" ? "#d62728" : \
           e eq "kyoto" ? "#8c564b" : "#17becf"

# Throughput: operations per second per workload, one bar per engine (log scale).
f = data . "/throughput.dat"
n = ncols(f)
set output out . "/throughput.png"
set title "Throughput (operations/s, median; log scale; higher is better)"
set ylabel "ops/s"
h = header(f)
plot for [i=2:n] f using i:xtic(1) title word(h, i) lc rgb color(word(h, i))

# Latency: p99 per workload per engine (log scale).
f = data . "/latency.dat"
n = ncols(f)
set output out . "/latency_p99.png"
set title "p99 latency (microseconds; log scale; lower is better)"
set ylabel "us"
set format y "%g"
h = header(f)
plot for [i=2:n] f using i:xtic(1) title word(h, i) lc rgb color(word(h, i))

# Ratios to the best peer on each workload: cask, and the limit reference.
f = data . "/ratio.dat"
set output out . "/ratio.png"
set title "How many times better than the best peer (log scale; 1 = as good as the best peer)"
set ylabel "x best peer"
set format y "%g"
set arrow 1 from graph 0, first 1 to graph 1, first 1 nohead lc rgb "black" lw 2 front
plot f using 2:xtic(1) title "cask" lc rgb "#1f77b4", \
     f using 3 title "limit (reference, not a product)" lc rgb "#bbbbbb"
