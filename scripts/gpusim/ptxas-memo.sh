#!/usr/bin/env bash
# ptxas, remembered. GPGPU-Sim runs `ptxas --gpu-name=sm_75 -v FILE.ptx --output-file /dev/null
# 2> FILE.ptxas` for every PTX file of the binary each time a process starts, only to read the
# register and shared-memory counts ptxas prints (they size its CTAs). For tokemb_tests that is
# about 30 s of a 38 s start-up, repeated for every test process and for identical input.
# sim-check.sh puts this script in the simulator's CUDA_INSTALL_PATH as bin/ptxas: the first call
# for a given (ptxas binary, arguments, PTX text) runs the real ptxas and keeps its stdout, stderr
# and exit status; every later call replays them. ptxas's -v report names kernels, never the input
# file, so a replay is byte-for-byte what ptxas would print.
#   TOKEMB_SIM_REAL_PTXAS  the real ptxas
#   TOKEMB_SIM_PTXAS_MEMO  the directory that keeps the answers (created if missing)
set -uo pipefail
real=${TOKEMB_SIM_REAL_PTXAS:?ptxas-memo: TOKEMB_SIM_REAL_PTXAS is not set}
memo=${TOKEMB_SIM_PTXAS_MEMO:?ptxas-memo: TOKEMB_SIM_PTXAS_MEMO is not set}

# The input is the one argument that names a regular file and is not the value of an option.
input=
args=()
prev=
for a in "$@"; do
  if [ -z "$input" ] && [ -f "$a" ] && [ "$prev" != --output-file ] && [ "$prev" != -o ]; then
    input=$a
    args+=("@input")
  else
    args+=("$a")
  fi
  prev=$a
done
[ -n "$input" ] || exec "$real" "$@"  # not a call we recognise: no memo

key=$( {
  stat -L -c '%n %s %Y' "$real"
  printf '%s\n' "${args[@]}"
  cat "$input"
} | sha256sum | cut -c1-32)
entry=$memo/$key
if [ -f "$entry.rc" ]; then
  cat "$entry.out"
  cat "$entry.err" >&2
  exit "$(cat "$entry.rc")"
fi

mkdir -p "$memo"
tmp=$(mktemp -d "$memo/.tmp.XXXXXX")
"$real" "$@" >"$tmp/out" 2>"$tmp/err"
rc=$?
echo "$rc" >"$tmp/rc"
# Published out and err first, rc last: a reader that sees rc sees the whole answer. Two processes
# that miss at once both run ptxas and write the same bytes.
mv -f "$tmp/out" "$entry.out" && mv -f "$tmp/err" "$entry.err" && mv -f "$tmp/rc" "$entry.rc"
rmdir "$tmp" 2>/dev/null
cat "$entry.out"
cat "$entry.err" >&2
exit "$rc"
