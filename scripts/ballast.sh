# Sourced by the GPU session scripts: another process (PyTorch) holds all of the GPU but
# $1 MiB, so that a run meets a real out-of-memory as on a smaller card.
#   hold_all_but ROOM_MIB    # starts it and waits until it holds the memory; sets $ballast
#   kill "$ballast"; wait "$ballast" 2>/dev/null
hold_all_but() {
  rm -f /tmp/ballast.ready
  ROOM_MIB=$1 python3 - <<'PY' &
import os, time, torch
free, total = torch.cuda.mem_get_info()
room = int(os.environ["ROOM_MIB"]) << 20
ballast = torch.empty(max(free - room, 0), dtype=torch.uint8, device="cuda")
left, _ = torch.cuda.mem_get_info()
print(f"ballast: holding {ballast.numel() >> 20} MiB; {left >> 20} MiB left free", flush=True)
open("/tmp/ballast.ready", "w").close()
time.sleep(3600)
PY
  ballast=$!
  for _ in $(seq 1 120); do [ -f /tmp/ballast.ready ] && break; sleep 0.5; done
}
