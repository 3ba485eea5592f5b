#!/usr/bin/env bash
# `make demo`: start the stack, make a sample video, sign in a demo account,
# buy a credit pack through the local fake payments provider, and run
# `octavia translate` on the video exactly as a user would type it; then
# show the subtitles it made. Run again, it reuses the stack and the account.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
OCTAVIA=.venv/bin/octavia
DEMO=var/demo
# A local demo account: fine in a script, as the stack's development secrets are.
EMAIL=${OCTAVIA_DEMO_EMAIL:-demo@octavia.example}
PASSWORD=${OCTAVIA_DEMO_PASSWORD:-"octavia demo 2024"}
# The demo's session lives apart from yours (~/.config/octavia).
export OCTAVIA_CONFIG_DIR="$PWD/$DEMO/config"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "Starting the stack"
$PY scripts/stack.py up

step "Making a sample video: $DEMO/sample.mp4"
$PY -m scripts.sample_media video "$DEMO/sample.mp4"

step "Signing in as $EMAIL"
if ! $OCTAVIA login --email "$EMAIL" --password-stdin <<<"$PASSWORD" 2>/dev/null; then
  $OCTAVIA signup --email "$EMAIL" --password-stdin <<<"$PASSWORD"
fi

step "Buying credits: octavia buy starter (the local fake Polar's page, paid here by the script)"
# `buy` prints the payment page on stdout, then waits for the provider's webhook to confirm it.
coproc BUY { $OCTAVIA buy starter; }
buy_pid=$BUY_PID  # bash unsets BUY_PID once the coprocess ends
read -r PAY_URL <&"${BUY[0]}"
# The page's Pay button: the fake then sends its signed `order.paid` webhook to billing.
$PY -c 'import httpx, sys; assert httpx.post(sys.argv[1] + "/pay").status_code == 303' "$PAY_URL"
cat <&"${BUY[0]}"  # the rest of what `buy` prints, once the credits have arrived
wait "$buy_pid"

step "octavia translate $DEMO/sample.mp4 --to pt --subtitles --out $DEMO/out"
rm -rf "$DEMO/out"
$OCTAVIA translate "$DEMO/sample.mp4" --to pt --subtitles --out "$DEMO/out"

step "The subtitles"
shopt -s nullglob
for srt in "$DEMO"/out/*.srt; do
  printf '\n\033[36m%s\033[0m\n' "$srt"
  head -n 8 "$srt"
done
echo
echo "Every file is in $DEMO/out/. The demo account's jobs:"
echo "  OCTAVIA_CONFIG_DIR=$DEMO/config $OCTAVIA jobs"
