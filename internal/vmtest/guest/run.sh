# Runs inside the VM (started by vmtest-runner from the data disk at
# /vmtest): each scenario in turn, its output in results/NAME.log and its
# exit status in results/NAME.rc. Every scenario cleans up after itself.
cd /vmtest || exit 1
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
echo "kernel $(uname -r), $(nproc) cpus, boot: $(systemd-analyze 2>&1 | head -1)"
for sc in scenarios/*.sh; do
  name=$(basename "$sc" .sh)
  echo "scenario $name: start"
  start=${EPOCHREALTIME/./}
  timeout -k 5 420 bash "$sc" >"results/$name.log" 2>&1
  echo $? >"results/$name.rc"
  echo "scenario $name: rc=$(cat "results/$name.rc") in $(( (${EPOCHREALTIME/./} - start) / 1000 )) ms"
  echo "TIMING scenario_total=$(( (${EPOCHREALTIME/./} - start) / 1000 ))_ms" >>"results/$name.log"
  sync
done
