# ptyqueue MODE GOFILE: holds a pty pair with bytes queued in it and, once
# GOFILE exists, reads them from the side they wait for and prints them.
#   input         raw slave; b"queued!\r" written to the master
#   output        cooked slave (OPOST, ONLCR); b"queued!\n" written to the
#                 slave: the master reads b"queued!\r\n"
#   input-line    cooked slave; b"queued!\n" written to the master
#   output-packet packet mode; b"queued!\n" written to the slave
import fcntl, os, select, struct, sys, time, tty

mode, gofile = sys.argv[1], sys.argv[2]
m, s = os.openpty()
if mode == "input":
    tty.setraw(s)
if mode == "output-packet":
    fcntl.ioctl(m, 0x5420, struct.pack("i", 1))  # TIOCPKT
if mode.startswith("input"):
    os.write(m, b"queued!\r" if mode == "input" else b"queued!\n")
    reader = s
else:
    os.write(s, b"queued!\n")
    reader = m
print("ready", os.ttyname(s), flush=True)
while not os.path.exists(gofile):
    time.sleep(0.05)
r, _, _ = select.select([reader], [], [], 2)
got = os.read(reader, 100) if r else b""
print("got", repr(got), flush=True)
time.sleep(1000)
