# ptystate: holds pseudo-terminal pairs in every state chpox keeps and
# checks them every 100 ms, before and after a restore: packet mode on the
# master, an exclusive slave, raw termios, a window size, a second pair
# still locked (opened, never unlockpt'd); and that bytes go both ways
# (in packet mode the master reads a TIOCPKT_DATA byte first).
import errno, fcntl, os, select, struct, sys, termios, time, tty

TIOCPKT, TIOCGPKT, TIOCGPTLCK, TIOCEXCL, TIOCGEXCL = 0x5420, 0x80045438, 0x80045439, 0x540C, 0x80045440

def geti(fd, req):
    return struct.unpack("i", fcntl.ioctl(fd, req, b"\0\0\0\0"))[0]

def read(fd, n):
    r, _, _ = select.select([fd], [], [], 2)
    if not r:
        fail("no data on fd %d" % fd)
    return os.read(fd, n)

def fail(why):
    print("FAIL", why, flush=True)
    sys.exit(1)

m, s = os.openpty()
tty.setraw(s)
fcntl.ioctl(s, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 77, 0, 0))
fcntl.ioctl(m, TIOCPKT, struct.pack("i", 1))
fcntl.ioctl(s, TIOCEXCL)
locked = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY)
# A pair whose slave was never opened (reads: EAGAIN), and one whose slave
# was opened and closed (reads: EIO, the slave side hung up).
fresh = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
fcntl.ioctl(fresh, 0x40045431, struct.pack("i", 0))  # TIOCSPTLCK: unlock
hung, hs = os.openpty()
os.close(hs)
os.set_blocking(hung, False)

def read_error(fd):
    try:
        os.read(fd, 10)
        return "data"
    except OSError as e:
        return e.errno
print("pid", os.getpid(), "slave", os.ttyname(s), flush=True)
n = 0
while True:
    if geti(m, TIOCGPKT) != 1:
        fail("packet mode lost")
    if geti(s, TIOCGEXCL) != 1:
        fail("exclusive mode lost")
    if geti(locked, TIOCGPTLCK) != 1:
        fail("the locked pair is unlocked")
    if geti(m, TIOCGPTLCK) != 0:
        fail("the pair is locked")
    if read_error(fresh) != errno.EAGAIN:
        fail("the pair whose slave was never opened reads %s" % read_error(fresh))
    if read_error(hung) != errno.EIO:
        fail("the pair whose slave was closed reads %s" % read_error(hung))
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(s, termios.TIOCGWINSZ, b"\0" * 8))
    if (rows, cols) != (33, 77):
        fail("window size %dx%d" % (cols, rows))
    lflag = termios.tcgetattr(s)[3]
    if lflag & (termios.ICANON | termios.ECHO):
        fail("termios: lflag %#x, not raw" % lflag)
    os.write(m, b"ping\n")
    if read(s, 100) != b"ping\n":
        fail("input garbled")
    os.write(s, b"pong\n")
    got = read(m, 100)
    if got != b"\0pong\n":
        fail("output %r" % got)
    n += 1
    print("ok", n, flush=True)
    time.sleep(0.1)
