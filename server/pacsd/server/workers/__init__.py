"""Several engine processes behind one server (setting ``workers``; docs/workers.md).

pynetdicom runs on the GIL: one process tops out at about one core however many
associations it serves. So a server runs ``workers`` engine processes that bind the
same DICOM port(s) with SO_REUSEPORT, and the kernel spreads incoming connections
over them. The first process is special: it holds the data directory's lock, checks
the index against the files at startup, hosts the control plane and supervises the
others. Operators still see one server:

- ``supervisor``: starts the workers, restarts one that dies, stops them on shutdown;
- ``replication``: a control-plane interceptor that repeats every state-changing call
  (add-ins, listener lifecycle, settings, log levels, certificates) on each worker
  once the first process has applied it;
- ``sync``: brings a (re)started worker to the first process's current state;
- ``relay``: streams each worker's log records and association events into the first
  process's log sinks and event streams;
- ``child``: the entry point of a worker process.

Workers speak gRPC to the supervisor over Unix sockets in a private (0700) folder:
the same services the control plane offers, without authentication, since only the
server's own user can reach them.
"""
