"""A server whose thread blocks in accept(2) on fd 3, once stdin closes."""
import socket
import sys
import threading

listener = socket.socket(fileno=3)
print("holding", flush=True)
sys.stdin.read()
listener.setblocking(True)  # accept(2) blocks in the kernel, no poll first


def serve():
    while True:
        conn, _ = listener.accept()
        conn.sendall(b"hello\n")
        conn.close()


thread = threading.Thread(target=serve, daemon=True)
thread.start()
print("listening", flush=True)
thread.join()
