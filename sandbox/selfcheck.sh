# sbx start-up self-check, and then the command: runs inside the agent's container, as the agent
# user. Arguments: an address on this machine that is not allowlisted (the network's gateway, so
# even a broken rule sends nothing off the machine), a name that is not allowlisted, `--`, and the
# command. The command starts only when every check passes; otherwise this exits 125 (sbx's own
# failure code) and says why.
addr=$1 name=$2
shift 3
fail() {
  echo "sbx: the firewall self-check failed, so the command was not started: $*" >&2
  exit 125
}
# The firewall, not the host, must refuse: a UDP datagram to a blocked address fails to send
# ("Operation not permitted" is the local packet filter's answer; a host never answers that).
out=$( (echo x > "/dev/udp/$addr/9") 2>&1 )
case $out in
  *"Operation not permitted"*) ;;
  *) fail "UDP to $addr was not blocked: ${out:-sent}" ;;
esac
# A blocked TCP connection is refused at once, not left to time out.
out=$(timeout 2 bash -c "exec 3<>/dev/tcp/$addr/9" 2>&1)
case $out in
  *"Connection refused"*) ;;
  *) fail "TCP to $addr:9 was not refused: ${out:-connected}" ;;
esac
# A name that is not allowlisted does not resolve.
if out=$(getent hosts "$name" 2>&1); then
  fail "$name resolved: $out"
fi
# The package caches (`SBX_CACHE_LINKS`: `TARGET=PATH_IN_HOME ...`), linked into the home, a
# fresh in-memory folder. A link that cannot be made costs a cache, not the session.
# One `mkdir` and one `ln` for all of them: this is on the way to the command's first byte.
dirs=()
for link in ${SBX_CACHE_LINKS:-}; do
  rel=${link#*=}
  case $rel in */*) dirs+=("$HOME/${rel%/*}") ;; esac
done
[ ${#dirs[@]} -eq 0 ] || mkdir -p "${dirs[@]}" 2>/dev/null
for link in ${SBX_CACHE_LINKS:-}; do
  rel=${link#*=}
  [ -e "$HOME/$rel" ] || ln -s "${link%%=*}" "$HOME/$rel" 2>/dev/null
done
exec "$@"
