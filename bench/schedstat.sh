#!/bin/bash
# Sample, every second while an archive runs, every thread's schedstat (CPU time, time
# runnable but waiting for a core, timeslices) and user/system ticks, of the archive
# command and its content workers, and /proc/stat; print a summary at the end.
#
#   bench/schedstat.sh OUT.txt &   # then run e.g. bench/bench_scale.py; it ends with the run
#
# A thread whose "wait" is large was runnable but had no core: on 2 cores at 1M small
# files, each content worker waited 20-27 s of a 65-75 s run (session 12).
out=${1:?usage: schedstat.sh OUT.txt}
: > "$out"
while true; do
  pids=$(pgrep -f 'config.toml archive|s3archive.archive.content_workers'; pgrep content_worker)
  if [ -z "$pids" ]; then sleep 0.2; [ -s "$out" ] && break; continue; fi
  for p in $pids; do
    for t in /proc/$p/task/*; do
      echo "$(date +%s.%N) $p $(basename "$t") $(tr ' ' _ < "$t/comm" 2>/dev/null)" \
           "$(cat "$t/schedstat" 2>/dev/null) $(cut -d')' -f2 "$t/stat" 2>/dev/null | cut -d' ' -f13,14)"
    done
  done >> "$out"
  echo "$(date +%s.%N) STAT $(head -1 /proc/stat)" >> "$out"
  sleep 1
done
awk '$2=="STAT"{next} {k=$2"/"$3"/"$4; run[k]=$5; wait[k]=$6; sl[k]=$7; ut[k]=$8; st[k]=$9}
     END {for (k in run) if (run[k] > 5e8)
       printf "%-36s run %6.1f s  wait %6.1f s  slices %6d  user %5.1f s  sys %5.1f s\n",
              k, run[k]/1e9, wait[k]/1e9, sl[k], ut[k]/100, st[k]/100}' "$out" | sort -k3 -nr
awk '$2=="STAT"{n++; if (n==1) {t0=$1; for (i=4;i<=11;i++) a[i]=$i} else {t1=$1; for (i=4;i<=11;i++) b[i]=$i}}
     END {printf "/proc/stat over %.1f s (core-s): user %.1f nice %.1f sys %.1f idle %.1f iowait %.1f\n",
          t1-t0, (b[4]-a[4])/100, (b[5]-a[5])/100, (b[6]-a[6])/100, (b[7]-a[7])/100, (b[8]-a[8])/100}' "$out"
