#!/usr/bin/env bash
# The README's walk-through with curl, as a script that runs as written.
#
# Start the server in another shell first, from the same directory:
#   cargo run --release -- serve
# then run docs/examples/walkthrough.sh. It is safe to run again.
#
# TEMPPASS is how the temppass command is run (default: cargo run -q --release --),
# BASE the server's address (default: http://127.0.0.1:8080). CI runs this
# script against a real server with both set (.ci/run).
set -euo pipefail
TEMPPASS=${TEMPPASS:-cargo run -q --release --}
BASE=${BASE:-http://127.0.0.1:8080}
field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# --- walk-through (the README shows these lines) ---
# 1. An application for service provider REF30; stdout is its software statement alone.
#    Safe to repeat: the same name, service providers and scopes keep the application.
STATEMENT=$($TEMPPASS app create --name my-app --service-provider REF30 --scope api:client:v2)

# 2. Register a client with it (dynamic client registration).
REGISTERED=$(curl -sS -X POST "$BASE/o/client/register" \
  -H 'Content-Type: application/json' -d "{\"software_statement\":\"$STATEMENT\"}")
CLIENT_ID=$(echo "$REGISTERED" | field client_id)
CLIENT_SECRET=$(echo "$REGISTERED" | field client_secret)

# 3. An access token.
TOKEN=$(curl -sS -X POST "$BASE/o/client/token" \
  -d "client_id=$CLIENT_ID&client_secret=$CLIENT_SECRET&grant_type=client_credentials" | field access_token)
DEVICE="fingerprint $(printf 'my-living-room-tv' | base64)"

# 4. The configuration lists regular MVPDs and TempPass MVPDs ("isTempPass": true).
curl -sS "$BASE/api/v2/REF30/configuration" -H "Authorization: Bearer $TOKEN"; echo

# 5. Before any authorization the profile is prospective: its notBefore is always now,
#    and reading it starts no clock.
curl -sS "$BASE/api/v2/REF30/profiles/TempPass" \
  -H "Authorization: Bearer $TOKEN" -H "AP-Device-Identifier: $DEVICE"; echo
sleep 1

# 6. The first authorization starts the ten minutes and returns a media token.
DECISION=$(curl -sS -X POST "$BASE/api/v2/REF30/decisions/authorize/TempPass" \
  -H "Authorization: Bearer $TOKEN" -H "AP-Device-Identifier: $DEVICE" \
  -H 'Content-Type: application/json' -d '{"resources":["res01"]}')
echo "$DECISION"
TOKEN_FROM_STEP_6=$(echo "$DECISION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["decisions"][0]["token"]["serializedToken"])')

# 7. The profile now shows the trial: notBefore is when step 6 started it (it no longer
#    moves with the clock), notAfter is when it ends.
sleep 1
curl -sS "$BASE/api/v2/REF30/profiles/TempPass" \
  -H "Authorization: Bearer $TOKEN" -H "AP-Device-Identifier: $DEVICE" \
  | python3 -c 'import json,sys; p = json.load(sys.stdin)["profiles"]["TempPass"]; print("notBefore", p["notBefore"], "notAfter", p["notAfter"])'

# 8. The media token of step 6 verifies against the published keys.
$TEMPPASS token verify --jwks "$BASE/.well-known/jwks.json" --resource res01 "$TOKEN_FROM_STEP_6"
# --- end of the walk-through ---
