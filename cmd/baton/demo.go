package main

import "io"

const demoWorkerArg = "__demo-worker"

func demoCmd(args []string, stdout, stderr io.Writer) int { return 0 }
func demoWorker() int                                      { return 0 }
