"""The ACD core: employee (agent) states, distribution strategies and queues.

Pure, in-memory and synchronous: nothing here touches the database, the network or the event
loop, and time comes from an injected clock or an explicit ``now``. The call path drives these
objects and turns their decisions into SIP legs; that is why routing decisions can be tested
(and benchmarked) without a single socket.
"""
