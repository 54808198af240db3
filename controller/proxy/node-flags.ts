/**
 * V8 flags the controller runs with, for the proxy's sake: carried by the shebang of controller/main.ts (so the
 * systemd unit and a plain `vncdispatch-controller` get them) and passed by `vncdispatch up`; bench:proxy runs its
 * proxy with them too.
 *
 * `--min-semi-space-size=16` (MiB): every relayed message leaves a few KB of garbage (stream and frame objects), and
 * V8's default 1 MiB young generation, which it does not grow at this allocation rate, is collected every few hundred
 * messages; each scavenge stalls the message in flight by 0.2-0.8 ms (bench:proxy: 13-15 scavenges in the proxy per
 * 3,300 round trips). At 16 MiB it runs every few thousand. bench:proxy RTT p99 per pass, proxy/websockify: 0.90-1.27x
 * before, 0.85-1.01x after (6 and 12 passes); idle memory per connection unchanged (~11 KB). The cost is up to 32 MiB
 * of RSS once per process, not per connection. Node refuses this flag in NODE_OPTIONS, hence the command line.
 */
export const CONTROLLER_NODE_FLAGS: readonly string[] = ['--min-semi-space-size=16'];
