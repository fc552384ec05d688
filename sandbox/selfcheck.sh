# sbx start-up self-check: runs inside the agent's container, as the agent user, before the
# command starts. Arguments: an address on this machine that is not allowlisted (the session
# network's gateway, so even a broken rule sends nothing off the machine) and a name that is not
# allowlisted. Prints one line per check; exits non-zero when a check fails.
addr=$1 name=$2 failed=0
# A refused connection must be refused by the firewall at once: "No route to host" is its ICMP
# admin-prohibited answer. "Connection refused" would mean the packet reached the host.
out=$(timeout 2 bash -c "exec 3<>/dev/tcp/$addr/9" 2>&1)
case $out in
  *"No route to host"*) echo "ok tcp $addr:9 refused by the firewall" ;;
  *) echo "FAIL tcp $addr:9 was not refused by the firewall: ${out:-connected}"; failed=1 ;;
esac
if out=$(getent hosts "$name" 2>&1); then
  echo "FAIL dns $name resolved: $out"; failed=1
else
  echo "ok dns $name does not resolve"
fi
exit $failed
