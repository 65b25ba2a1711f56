#!/usr/bin/env bash
# Prints an HS256 JWT the authenticated development brokers accept (the
# `fitz-auth` service of compose.yml and `auth` of scripts/brokers.sh):
# audience `fitz`, identity `tid=dev` (route family 1 under
# FITZ_ROUTE_FAMILY_MAP=dev=1), every permission of every domain, valid for
# an hour, signed with the development secret.
#
#   FITZ_URL=tcp://127.0.0.1:4091 FITZ_TOKEN=$(scripts/dev-token.sh) cargo run -p fitz --example tour
#
# Override with FITZ_JWT_SECRET and FITZ_TOKEN_TTL (seconds). Needs openssl.
# For development only: the secret is public.
set -euo pipefail

secret="${FITZ_JWT_SECRET:-dev-test-secret}"
ttl="${FITZ_TOKEN_TTL:-3600}"
now="$(date +%s)"

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

header="$(printf '%s' '{"alg":"HS256","typ":"JWT"}' | b64url)"
claims="$(printf '{"iss":"","aud":"fitz","sub":"fitz-dev","tid":"dev","iat":%d,"exp":%d,"permissions":["kv://**#*","queue://**#*","rpc://**#*","notice://**#*","lease://**#*","stream://**#*","schedule://**#*"]}' \
    "$now" "$((now + ttl))" | b64url)"
signature="$(printf '%s.%s' "$header" "$claims" | openssl dgst -sha256 -hmac "$secret" -binary | b64url)"
printf '%s.%s.%s\n' "$header" "$claims" "$signature"
