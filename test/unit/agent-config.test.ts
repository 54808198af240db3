/** The agent's command line: defaults, validation, and errors a person can act on. */
import { describe, expect, it } from 'vitest';
import { ConfigError, defaults, parseConfig } from '../../agent/config.js';
import { fallbackSessionScript, sessionLauncher } from '../../agent/paths.js';
import { existsSync, statSync } from 'node:fs';
import { makePki } from '../helpers/certs.js';

const pki = makePki();
const tls = ['--tls-cert', pki.serverCert, '--tls-key', pki.serverKey, '--tls-ca', pki.caCert];

describe('parseConfig', () => {
  it('has the documented defaults', () => {
    const c = parseConfig(tls);
    expect(c).toMatchObject({
      listenHost: '0.0.0.0', listenPort: 7443, insecure: false, stateDir: '/var/lib/vncdispatch-agent',
      maxSessions: 50, minUid: 1000, allowGroup: undefined, startSettleMs: 50, relayHandshakeTimeoutMs: 5000,
      relayMaxQueuedBytes: 262144,
      geometry: '1280x800', depth: 24,
      sessionScript: undefined, fallbackSessionScript, sessionLauncher, xvnc: 'Xvnc', xvncGlx: false, logLevel: 'info',
      stopGraceMs: defaults.stopGraceMs, runtimeDir: '/run/vncdispatch', allowRootGroup: false, startTimeoutMs: 8000,
      lookupTimeoutMs: 5000, reapIntervalMs: 500, shutdownGraceMs: 5000, loginEnvTimeoutMs: 2000, spawners: 3,
      maxConcurrentStarts: 4, agentNice: -10,
    });
    expect(c.tls?.cert.toString()).toContain('BEGIN CERTIFICATE');
  });

  it('ships an executable fallback session script and the session launcher', () => {
    for (const script of [fallbackSessionScript, sessionLauncher]) {
      expect(existsSync(script)).toBe(true);
      expect(statSync(script).mode & 0o111).toBe(0o111);
    }
  });

  it('parses every flag', () => {
    const c = parseConfig([...tls, '--listen', '[::1]:0', '--state-dir', '/tmp/s', '--max-sessions', '3',
      '--min-uid', '2000', '--allow-group', 'vdusers', '--geometry', '1920x1080',
      '--depth', '16', '--session-script', '/bin/true', '--xvnc', '/usr/bin/Xvnc', '--log-level', 'debug',
      '--stop-grace-ms', '100', '--runtime-dir', '/tmp/r', '--allow-root-group',
      '--start-timeout-ms', '4000', '--lookup-timeout-ms', '500', '--reap-interval-ms', '100',
      '--shutdown-grace-ms', '50', '--start-settle-ms', '0', '--relay-handshake-timeout-ms', '250',
      '--relay-max-queued-bytes', '65536',
      '--login-env-timeout-ms', '300', '--spawners', '1', '--agent-nice=-3', '--max-concurrent-starts', '7', '--xvnc-glx']);
    expect(c).toMatchObject({ listenHost: '::1', listenPort: 0, stateDir: '/tmp/s', maxSessions: 3, minUid: 2000,
      allowGroup: 'vdusers', geometry: '1920x1080', depth: 16, sessionScript: '/bin/true',
      xvnc: '/usr/bin/Xvnc', xvncGlx: true, logLevel: 'debug', stopGraceMs: 100,
      runtimeDir: '/tmp/r', allowRootGroup: true, startTimeoutMs: 4000, lookupTimeoutMs: 500, reapIntervalMs: 100,
      shutdownGraceMs: 50, startSettleMs: 0, relayHandshakeTimeoutMs: 250, relayMaxQueuedBytes: 65536, loginEnvTimeoutMs: 300,
      spawners: 1, agentNice: -3, maxConcurrentStarts: 7 });
  });

  it('needs all three TLS files unless --insecure, and refuses mixing them', () => {
    expect(() => parseConfig([])).toThrow(/--tls-cert, --tls-key and --tls-ca are all required/);
    expect(() => parseConfig(['--tls-cert', pki.serverCert])).toThrow(ConfigError);
    expect(parseConfig(['--insecure']).tls).toBeUndefined();
    expect(() => parseConfig(['--insecure', ...tls])).toThrow(/cannot be combined/);
    expect(() => parseConfig(['--tls-cert', '/nonexistent', '--tls-key', pki.serverKey, '--tls-ca', pki.caCert]))
      .toThrow(/--tls-cert \/nonexistent/);
  });

  it.each([
    [['--listen', '7443'], /HOST:PORT/],
    [['--listen', 'host:99999'], /between 0 and 65535/],
    [['--max-sessions', '0'], /between 1/],
    [['--max-sessions', 'many'], /integer/],
    [['--min-uid', '0'], /between 1/],
    [['--geometry', '10x10'], /--geometry/],
    [['--depth', '8'], /16, 24 or 32/],
    [['--allow-group', 'a;b'], /not a valid group/],
    [['--log-level', 'loud'], /pino level/],
    // The VNC ports are gone: a desktop listens only on a Unix socket that the agent relays.
    [['--vnc-ports', '5900-5999'], /Unknown option/],
    [['--vnc-listen', '127.0.0.1'], /Unknown option/],
    [['--runtime-dir', 'run/vd'], /absolute path/],
    [['--runtime-dir', `/${'x'.repeat(80)}`], /at most 64 characters/],
    [['--relay-handshake-timeout-ms', '10'], /between 100/],
    [['--relay-max-queued-bytes', '1024'], /between 65536/],
    [['--session-script', 'xstartup'], /--session-script must be an absolute path/],
    [['--start-timeout-ms', '1000', '--lookup-timeout-ms', '1000'], /--lookup-timeout-ms must be below/],
    [['--login-env-timeout-ms', '5'], /--login-env-timeout-ms must be between 10/],
    [['--start-timeout-ms', '1000', '--lookup-timeout-ms', '500', '--login-env-timeout-ms', '1000'],
      /--login-env-timeout-ms must be below --start-timeout-ms/],
    [['--spawners', '0'], /--spawners must be between 1 and 64/],
    [['--max-concurrent-starts', '0'], /--max-concurrent-starts must be between 1 and 1024/],
    [['--spawners', '65'], /--spawners must be between 1 and 64/],
    [['--spawners', 'two'], /--spawners must be an integer/],
    [['--agent-nice=-21'], /--agent-nice must be between -20 and 0/],
    [['--agent-nice', '5'], /--agent-nice must be between -20 and 0/],
    [['--agent-nice', 'high'], /--agent-nice must be an integer/],
    // parseArgs takes a bare negative number for an option: the usage text says to write it with '='.
    [['--agent-nice', '-5'], /--agent-nice=-XYZ/],
    [['--bogus'], /Unknown option/],
    [['stray'], /positional/],
  ])('refuses %j', (args, message) => {
    expect(() => parseConfig([...tls, ...args])).toThrow(message);
  });
});
