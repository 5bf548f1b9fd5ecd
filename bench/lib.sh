# Shared by bench/load and bench/scale: sourced, not run.

ensure_wrk() {
  command -v wrk >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ]; then
    (apt-get install -y wrk || (apt-get update && apt-get install -y wrk)) >/dev/null
  else
    echo "this benchmark needs wrk (apt-get install wrk)" >&2; exit 1
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_for() { # url
  for _ in $(seq 1 300); do curl -sf "$1" >/dev/null && return 0; sleep 0.1; done
  echo "nothing answers at $1" >&2; exit 1
}

# `url` with its database name replaced by `db`.
with_database() { # url db
  python3 - "$1" "$2" <<'PY'
import sys
url, db = sys.argv[1], sys.argv[2]
main, sep, query = url.partition("?")
start = main.find("://") + 3
slash = main.find("/", start)
main = (main if slash < 0 else main[:slash]) + "/" + db
print(main + sep + query)
PY
}

# `--init` when this temppass's `app create` has it (it then refuses to make a
# store that does not exist yet without it), else nothing.
app_create_init() { # bin
  if "$1" app create --help 2>/dev/null | grep -q -- '--init'; then echo --init; fi
}

b64() { printf '%s' "$1" | base64 -w0; }

json_field() { # field < json
  python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

# Registers a client with the software statement and prints an access token.
access_token() { # base statement
  local registered client_id client_secret
  registered=$(curl -sf -X POST "$1/o/client/register" -H 'content-type: application/json' -d "{\"software_statement\":\"$2\"}")
  client_id=$(printf '%s' "$registered" | json_field client_id)
  client_secret=$(printf '%s' "$registered" | json_field client_secret)
  curl -sf -X POST "$1/o/client/token" -d "client_id=$client_id&client_secret=$client_secret&grant_type=client_credentials" \
    | json_field access_token
}

# VmRSS of a process, in MiB.
rss_mib() { # pid
  awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}

# wrk scripts every benchmark shares, written into `dir`:
#   report.lua  prints "RESULT req/s p50-ms p99-ms errors requests" when wrk is done
#   base64.lua  a base64() function, for device identifiers made per request
write_lua_helpers() { # dir
  cat > "$1/report.lua" <<'LUA'
done = function(summary, latency, requests)
  io.write(string.format("RESULT %.0f %.3f %.3f %d %d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.requests))
end
LUA
  cat > "$1/base64.lua" <<'LUA'
local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
function base64(text)
  return ((text:gsub(".", function(c)
    local bits, byte = "", c:byte()
    for i = 8, 1, -1 do bits = bits .. (byte % 2 ^ i - byte % 2 ^ (i - 1) > 0 and "1" or "0") end
    return bits
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(six)
    if #six < 6 then return "" end
    local n = 0
    for i = 1, 6 do n = n + (six:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return alphabet:sub(n + 1, n + 1)
  end) .. ({ "", "==", "=" })[#text % 3 + 1])
end
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("index", threads)
end
LUA
}

# Runs wrk with `script` (plus the report) and prints "req/s p50 p99 errors requests".
wrk_result() { # threads connections seconds script url
  local out
  out=$(wrk -t"$1" -c"$2" -d"$3s" --latency -s "$4" "$5" 2>&1)
  printf '%s\n' "$out" | awk '/^RESULT/ { print $2, $3, $4, $5, $6 }' | grep . \
    || { echo "wrk gave no result for $5:" >&2; printf '%s\n' "$out" >&2; exit 1; }
}
