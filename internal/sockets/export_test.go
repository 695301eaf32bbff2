package sockets

// Holdable exposes holdable to the external tests.
var Holdable = holdable
