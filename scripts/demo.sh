#!/usr/bin/env bash
# `make demo`: start the stack, make a sample video, sign in a demo account,
# buy a credit pack through the local fake payments provider, and run
# `octavia translate` on the video exactly as a user would type it: subtitles,
# then the video dubbed into Portuguese; show what they made. Run again, it
# reuses the stack and the account.
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

step "octavia translate $DEMO/sample.mp4 --to pt --dub --soft-subtitles --keep-original-audio --out $DEMO/dub"
rm -rf "$DEMO/dub"
$OCTAVIA translate "$DEMO/sample.mp4" --to pt --dub --soft-subtitles --keep-original-audio --out "$DEMO/dub"

step "How the Portuguese speech was fitted into the English timing (the sync report)"
$PY - "$DEMO"/dub/*.sync.json <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
print(f"{'segment':>7}  {'original':>15}  {'dubbed':>15}  {'speed':>5}  text")
for segment in report.get("segments", []):
    span = lambda a, b: f"{float(segment.get(a, '0s')[:-1]):6.2f}-{float(segment.get(b, '0s')[:-1]):6.2f}s"
    print(f"{segment.get('index', 0):>7}  {span('originalStartOffset', 'originalEndOffset'):>15}  "
          f"{span('dubbedStartOffset', 'dubbedEndOffset'):>15}  {segment.get('speedFactor', 1.0):5.2f}  {segment.get('text', '')[:48]}")
print(f"fastest {report.get('maxAppliedSpeedFactor', 1.0):.2f}x, drift at most {report.get('maxDrift', '0s')}, "
      f"{report.get('segmentsOverCap', 0)} segment(s) over the {report.get('maxSpeedFactor')}x cap")
PY
echo
echo "The dubbed video: $(ls "$DEMO"/dub/*.mp4) (Portuguese voice by default, English as a second track, Portuguese subtitles)."
echo "Every file is in $DEMO/out/ and $DEMO/dub/. The demo account's jobs:"
echo "  OCTAVIA_CONFIG_DIR=$DEMO/config $OCTAVIA jobs"
