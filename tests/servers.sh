# Server set-up for tests/run-all.sh (sourced). Each backend's servers are found or started on
# loopback; the URLs the tests use are exported as CACHESTACK_TEST_* variables.

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Waits until 127.0.0.1:$1 accepts connections (at most ~10 s).
wait_port() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

ensure_servers() {
  # Backends that need servers register their set-up here as they land (Redis, PostgreSQL,
  # Memcached); the memory and file backends need none.
  export CACHESTACK_TEST_TMP="${CACHESTACK_TEST_TMP:-$(mktemp -d)}"
  CLEANUP+=("rm -rf '$CACHESTACK_TEST_TMP'")
}
