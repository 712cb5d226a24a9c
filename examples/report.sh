#!/bin/sh
# A deliberately slow, deterministic "report generator": sums the columns of a CSV and
# writes an HTML report. Used by the README's first command to show a miss, then a hit.
set -eu
data=$1
out=$2
echo "crunching $data ..." >&2
sleep 2
awk -F, 'NR > 1 { for (i = 1; i <= NF; i++) sum[i] += $i; n = NF }
         END { printf "<html><body><h1>Totals</h1><ul>"
               for (i = 1; i <= n; i++) printf "<li>column %d: %d</li>", i, sum[i]
               print "</ul></body></html>" }' "$data" > "$out"
echo "wrote $out"
