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
  start_memcached
  start_redis
  start_postgres
  start_s3
  ensure_chromium
}

# Headless Chromium for the web page test (tests/tests/web_page.rs): Debian's `chromium`,
# installed when missing. Exports CACHESTACK_TEST_CHROMIUM.
ensure_chromium() {
  if ! command -v chromium >/dev/null 2>&1; then
    apt_install chromium
  fi
  CACHESTACK_TEST_CHROMIUM="$(command -v chromium)"
  export CACHESTACK_TEST_CHROMIUM
}

# Redis: installs redis-server when missing; makes sure 127.0.0.1:6379 answers (starting one if
# not); starts a 3-master Redis Cluster and a TLS server (self-signed CA made with openssl) on
# free loopback ports. The restart tests start their own servers.
# Exports CACHESTACK_TEST_REDIS_URL, CACHESTACK_TEST_REDIS_CLUSTER_URL, CACHESTACK_TEST_REDISS_URL.
start_redis() {
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    apt_install redis-server
  fi
  local dir="$CACHESTACK_TEST_TMP/redis"
  mkdir -p "$dir"
  # Servers run in the background of this shell (not daemonized), so cleanup knows their pids.
  local common=(--bind 127.0.0.1 --save "" --appendonly no --daemonize no)

  # The shared single server. Tests use database 9 and their own namespaces; never FLUSHDB.
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    redis-server --port 6379 "${common[@]}" --dir "$dir" --logfile "$dir/6379.log" &
    CLEANUP+=("kill $!")
    if ! wait_port 6379; then
      echo "redis-server did not start on 127.0.0.1:6379:" >&2
      cat "$dir/6379.log" >&2 || true
      return 1
    fi
  fi
  export CACHESTACK_TEST_REDIS_URL="redis://127.0.0.1:6379/9"
  # Test namespaces start with this run's id; the run's keys are removed from the shared server
  # at exit (SCAN in a script: test keys hold spaces, CR/LF and other bytes a shell would mangle).
  export CACHESTACK_TEST_REDIS_RUN="run$$x$RANDOM"
  CLEANUP+=("redis-cli -h 127.0.0.1 -p 6379 -n 9 eval \"local c = '0' repeat local r = redis.call('SCAN', c, 'MATCH', ARGV[1], 'COUNT', 1000) c = r[1] for _, k in ipairs(r[2]) do redis.call('UNLINK', k) end until c == '0' return 0\" 0 'cachestack:$CACHESTACK_TEST_REDIS_RUN-*'")

  # A 3-master cluster. Each node also listens on its port + 10000 (the cluster bus), so ports
  # are chosen with that one free too.
  local ports port nodes=()
  ports=$(python3 -c '
import socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
found = []
while len(found) < 3:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    p = 20000 + p % 30000
    if p not in found and free(p) and free(p + 10000):
        found.append(p)
print(" ".join(map(str, found)))')
  for port in $ports; do
    mkdir -p "$dir/cluster-$port"
    redis-server --port "$port" "${common[@]}" --cluster-enabled yes \
      --cluster-config-file "$dir/cluster-$port/nodes.conf" --cluster-node-timeout 5000 \
      --dir "$dir/cluster-$port" --logfile "$dir/cluster-$port/redis.log" &
    CLEANUP+=("kill $!")
    if ! wait_port "$port"; then
      echo "redis-server (cluster node) did not start on 127.0.0.1:$port:" >&2
      cat "$dir/cluster-$port/redis.log" >&2 || true
      return 1
    fi
    nodes+=("127.0.0.1:$port")
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$dir/cluster-create.log" 2>&1 || {
    echo "redis-cli --cluster create failed:" >&2
    cat "$dir/cluster-create.log" >&2
    return 1
  }
  local ok=0
  for _ in $(seq 1 100); do
    ok=1
    for port in $ports; do
      redis-cli -h 127.0.0.1 -p "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || ok=0
    done
    [ "$ok" = 1 ] && break
    sleep 0.1
  done
  if [ "$ok" != 1 ]; then
    echo "the Redis Cluster on ${nodes[*]} did not reach cluster_state:ok" >&2
    return 1
  fi
  export CACHESTACK_TEST_REDIS_CLUSTER_URL="redis+cluster://$(IFS=,; echo "${nodes[*]}")"

  # A TLS server with a certificate for 127.0.0.1 signed by a throwaway CA.
  if ! command -v openssl >/dev/null 2>&1; then
    apt_install openssl
  fi
  local tls="$dir/tls"
  mkdir -p "$tls"
  if ! {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
      -subj "/CN=cachestack test CA" -keyout "$tls/ca.key" -out "$tls/ca.crt" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" &&
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=127.0.0.1" \
      -keyout "$tls/server.key" -out "$tls/server.csr" &&
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' >"$tls/server.ext" &&
    openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial \
      -days 2 -extfile "$tls/server.ext" -out "$tls/server.crt"
  } >"$tls/openssl.log" 2>&1; then
    echo "openssl could not make the test certificates:" >&2
    cat "$tls/openssl.log" >&2
    return 1
  fi
  chmod 644 "$tls/server.key"
  port=$(free_port)
  redis-server --port 0 --tls-port "$port" "${common[@]}" --tls-cert-file "$tls/server.crt" \
    --tls-key-file "$tls/server.key" --tls-ca-cert-file "$tls/ca.crt" --tls-auth-clients no \
    --dir "$tls" --logfile "$tls/redis.log" &
  CLEANUP+=("kill $!")
  if ! wait_port "$port"; then
    echo "redis-server (TLS) did not start on 127.0.0.1:$port:" >&2
    cat "$tls/redis.log" >&2 || true
    return 1
  fi
  export CACHESTACK_TEST_REDISS_URL="rediss://127.0.0.1:$port/0?tls_ca=$tls/ca.crt"
}

# Memcached: installs it when missing and starts two instances on free loopback ports (the
# backend's single-server and two-server suites); the kill test starts its own.
# Exports CACHESTACK_TEST_MEMCACHED_URL (first server) and CACHESTACK_TEST_MEMCACHED_POOL_URL.
start_memcached() {
  if ! command -v memcached >/dev/null 2>&1; then
    apt_install memcached
  fi
  local ports=() port pid
  for _ in 1 2; do
    port=$(free_port)
    # -U 0: no UDP; -u root: memcached refuses to run as root otherwise.
    memcached -l 127.0.0.1 -p "$port" -U 0 -u root -m 64 >"$CACHESTACK_TEST_TMP/memcached-$port.log" 2>&1 &
    pid=$!
    CLEANUP+=("kill $pid")
    if ! wait_port "$port"; then
      echo "memcached did not start on 127.0.0.1:$port:" >&2
      cat "$CACHESTACK_TEST_TMP/memcached-$port.log" >&2 || true
      return 1
    fi
    ports+=("$port")
  done
  export CACHESTACK_TEST_MEMCACHED_URL="memcached://127.0.0.1:${ports[0]}"
  export CACHESTACK_TEST_MEMCACHED_POOL_URL="memcached://127.0.0.1:${ports[0]},127.0.0.1:${ports[1]}"
}

# PostgreSQL: makes sure the shared server on 127.0.0.1:5432 answers with trust auth and has a
# database `test`. On a fresh machine it installs Debian's postgresql and starts its cluster
# (creating one if none exists); it never stops or restarts a running server, and leaves a server
# it started running (it is the machine's service). The restart test makes its own private
# cluster with pg_createcluster. Exports CACHESTACK_TEST_POSTGRES_URL.
start_postgres() {
  local port=5432 version installed=0 user
  if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    apt_install postgresql
    installed=1
  fi
  version=$(ls /usr/lib/postgresql | sort -n | tail -n 1)
  if ! pg_isready -q -h 127.0.0.1 -p "$port"; then
    if ! pg_lsclusters -h 2>/dev/null | awk -v v="$version" '$1 == v && $2 == "main"' | grep -q .; then
      pg_createcluster "$version" main --port "$port" -- --auth=trust >/dev/null
    elif [ "$installed" = 1 ]; then
      # The package's own cluster asks for passwords over TCP; the tests connect with trust.
      sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "/etc/postgresql/$version/main/pg_hba.conf"
    fi
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || {
      echo "PostgreSQL $version/main did not start:" >&2
      tail -n 20 "/var/log/postgresql/postgresql-$version-main.log" >&2 || true
      return 1
    }
  elif [ "$installed" = 1 ]; then
    # Started by the package's install script: allow trust on loopback and reload.
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "/etc/postgresql/$version/main/pg_hba.conf"
    pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  fi
  for _ in $(seq 1 100); do
    pg_isready -q -h 127.0.0.1 -p "$port" && break
    sleep 0.1
  done
  user=""
  for candidate in postgres root; do
    if psql -h 127.0.0.1 -p "$port" -U "$candidate" -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
      user=$candidate
      break
    fi
  done
  if [ -z "$user" ]; then
    echo "PostgreSQL on 127.0.0.1:$port does not let user postgres or root in without a password;" >&2
    echo "the tests expect trust auth on loopback (pg_hba.conf: host all all 127.0.0.1/32 trust)" >&2
    return 1
  fi
  if ! psql -h 127.0.0.1 -p "$port" -U "$user" -d postgres -Atqc "select 1 from pg_database where datname = 'test'" | grep -q 1; then
    psql -h 127.0.0.1 -p "$port" -U "$user" -d postgres -qc 'CREATE DATABASE test' >/dev/null
  fi
  export CACHESTACK_TEST_POSTGRES_URL="postgres://$user@127.0.0.1:$port/test"
}

# S3: moto's S3 server (pip package moto[server], installed when missing) on a free loopback
# port, with the bucket `cachestack-test`, run by tests/s3_server.py (one request at a time, so
# that conditional writes are atomic as on S3: see that file). The kill test starts its own.
# Exports CACHESTACK_TEST_S3_URL (test credentials in the URL: moto accepts any).
start_s3() {
  if ! python3 -c 'import moto.moto_server.werkzeug_app, werkzeug, flask' >/dev/null 2>&1; then
    python3 -m pip install -q 'moto[server]' || python3 -m pip install -q --break-system-packages 'moto[server]'
  fi
  local port pid
  port=$(free_port)
  python3 "$(dirname "${BASH_SOURCE[0]}")/s3_server.py" "$port" cachestack-test >"$CACHESTACK_TEST_TMP/s3-$port.log" 2>&1 &
  pid=$!
  CLEANUP+=("kill $pid")
  if ! wait_port "$port"; then
    echo "the S3 test server (moto) did not start on 127.0.0.1:$port:" >&2
    cat "$CACHESTACK_TEST_TMP/s3-$port.log" >&2 || true
    return 1
  fi
  export CACHESTACK_TEST_S3_URL="s3://cachestack-test/run$$?endpoint=http://127.0.0.1:$port&allow_http=true&region=us-east-1&access_key_id=cachestack-test-key&secret_access_key=cachestack-test-secret"
}
