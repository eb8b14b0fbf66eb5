#!/usr/bin/env python3
"""Runs a shell command in a QEMU guest of vm_tests/qemu (make-guest.sh): the guest serves
a shell on its second serial port, which QEMU offers on a unix socket.  Prints the
command's output and exits with its exit status (124 on timeout, 125 if the guest does
not answer at all).  The command's stdin is /dev/null.

Under QEMU's software emulation here, input on the console is now and then not delivered
to the guest until more input follows (seen on a serial port and on a virtio console
alike: every other command waited for the next one).  So while it waits for the answer,
this keeps sending empty lines, which the guest's shell ignores.

usage: guest_ctl.py SOCKET TIMEOUT_S COMMAND"""
import socket
import sys
import time
import uuid


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    path, timeout, command = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    if "\n" in command:
        print("guest_ctl: one line only", file=sys.stderr)
        return 2
    marker = "__vpf_done_" + uuid.uuid4().hex[:8]
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
    except OSError as e:
        print(f"guest_ctl: {path}: {e}", file=sys.stderr)
        return 125
    # The exit status is printed after the output, on a line of its own; the marker is
    # written split in two, so that an echo of the command line does not end the wait.
    half = len(marker) // 2
    s.sendall(f"{{ {command}\n}} </dev/null\nvpf_rc=$?; echo; echo {marker[:half]}\"\"{marker[half:]}=$vpf_rc\n".encode())
    buf = b""
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        if left <= 0:
            sys.stdout.write(buf.decode(errors="replace"))
            print(f"guest_ctl: no answer within {timeout} s", file=sys.stderr)
            return 124
        s.settimeout(min(left, 0.1))
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            s.sendall(b"\n")  # the nudge
            continue
        if not chunk:
            print("guest_ctl: the guest's console closed", file=sys.stderr)
            return 125
        buf += chunk
        text = buf.decode(errors="replace")
        at = text.find(marker + "=")
        if at >= 0 and "\n" in text[at:]:
            out = text[:at]
            if out.endswith("\n"):  # the echo before the marker
                out = out[:-1]
            sys.stdout.write(out)
            return int(text[at + len(marker) + 1:].split("\n", 1)[0].strip() or 125)


if __name__ == "__main__":
    sys.exit(main())
