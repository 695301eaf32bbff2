"""A server with a pool of idle threads (argv[1] of them), and an acceptor
thread that later blocks in accept(2) on fd 3: a thread that started long
before it serves, blocked on a lock meanwhile, as a thread pool's is. It
prints "acceptor TID", and serves once stdin closes."""
import socket
import sys
import threading

listener = socket.socket(fileno=3)
listener.setblocking(True)
never, go, started = threading.Event(), threading.Event(), threading.Event()
acceptor_tid = 0


def idle():
    never.wait()


def serve():
    global acceptor_tid
    acceptor_tid = threading.get_native_id()
    started.set()
    go.wait()
    while True:
        conn, _ = listener.accept()
        conn.sendall(b"hello\n")
        conn.close()


for _ in range(int(sys.argv[1])):
    threading.Thread(target=idle, daemon=True).start()
acceptor = threading.Thread(target=serve, daemon=True)
acceptor.start()
started.wait()
print("acceptor", acceptor_tid, flush=True)
print("holding", flush=True)
sys.stdin.read()
go.set()
print("listening", flush=True)
acceptor.join()
