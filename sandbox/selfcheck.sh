# sbx start-up self-check: runs inside the agent's container, as the agent user, before the
# command starts. Arguments: an address on this machine that is not allowlisted (the session
# network's gateway, so even a broken rule sends nothing off the machine) and a name that is not
# allowlisted. Prints one line per check; exits non-zero when a check fails.
addr=$1 name=$2 failed=0
# A blocked connection must be refused at once. sbx then checks the firewall's own log for it,
# since a closed port on the host would look the same from here.
out=$(timeout 2 bash -c "exec 3<>/dev/tcp/$addr/9" 2>&1)
case $out in
  *"Connection refused"*) echo "ok tcp $addr:9 refused" ;;
  *) echo "FAIL tcp $addr:9 was not refused: ${out:-connected}"; failed=1 ;;
esac
if out=$(getent hosts "$name" 2>&1); then
  echo "FAIL dns $name resolved: $out"; failed=1
else
  echo "ok dns $name does not resolve"
fi
exit $failed
