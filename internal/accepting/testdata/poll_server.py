"""socketserver on fd 3, once stdin closes: serve_forever waits in poll(2)."""
import socket
import socketserver
import sys


class Hello(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(b"hello\n")


server = socketserver.TCPServer(None, Hello, bind_and_activate=False)
server.socket = socket.socket(fileno=3)
print("holding", flush=True)
sys.stdin.read()
print("listening", flush=True)
server.serve_forever()
