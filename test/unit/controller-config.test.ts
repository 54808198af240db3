import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../../controller/config.js';

const KEY = 'k'.repeat(32);
const TLS = ['--agent-tls-cert', '/c.crt', '--agent-tls-key', '/c.key', '--agent-tls-ca', '/ca.crt'];
const parse = (...args: string[]) => parseConfig(['--api-key', KEY, ...TLS, ...args])!;

describe('controller config', () => {
  it('takes an API key that starts with a dash in the --api-key=KEY form (base64url keys can)', () => {
    const dashKey = `-${'x'.repeat(31)}`;
    expect(parseConfig([`--api-key=${dashKey}`, ...TLS])!.apiKeys).toEqual([{ key: dashKey, role: 'admin' }]);
    expect(() => parseConfig(['--api-key', dashKey, ...TLS])).toThrow(ConfigError);
  });

  it('--blade-networks: private ranges by default, CIDR lists (repeatable), none, and nothing else', () => {
    expect(parse().bladeNetworks).toEqual(['127.0.0.0/8', '10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '::1/128', 'fc00::/7']);
    expect(parse('--blade-networks', '10.1.0.0/16,192.0.2.7', '--blade-networks', 'fd00::/8').bladeNetworks)
      .toEqual(['10.1.0.0/16', '192.0.2.7/32', 'fd00::/8']);
    expect(parse('--blade-networks', 'none').bladeNetworks).toEqual([]);
    for (const bad of ['10.0.0.0/33', 'fd00::/129', 'example.org/8', '10.0.0.0/8/1', '10.0.0.0/x', 'fe80::1%eth0/64', 'none,10.0.0.0/8']) {
      expect(() => parse('--blade-networks', bad), bad).toThrow(/--blade-networks/);
    }
  });

  it('has the documented defaults and is frozen', () => {
    const c = parse();
    expect(c.listen).toEqual({ host: '127.0.0.1', port: 8080 });
    expect(c.publicUrl).toBe('http://127.0.0.1:8080');
    expect(c.publicUrlGiven).toBe(false);
    expect(c.dataDir).toBe('/var/lib/vncdispatch');
    expect(c.placement).toBe('least-loaded');
    expect(c.startAttempts).toBe(3);
    expect(c.healthIntervalMs).toBe(1000);
    expect(c.downAfterMs).toBe(2500);
    expect(c.agentStartTimeoutMs).toBe(10_000);
    expect(c.agentCallTimeoutMs).toBe(3_000);
    expect(c.reconcileIntervalMs).toBe(5_000);
    expect(c.reconcileReportOnly).toBe(false);
    expect(c.orphanGraceMs).toBe(5_000);
    expect(c.startSettleMs).toBe(15_000);
    expect(c.sessionRetentionHours).toBe(720);
    expect(c.tokenTtlSeconds).toBe(60);
    expect(c.tokenReuse).toBe(false);
    expect(c.maxReconnectKeys).toBe(32);
    expect(c.mongodbUrl).toBeNull();
    expect(c.agentTls).toEqual({ cert: '/c.crt', key: '/c.key', ca: '/ca.crt' });
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.blades)).toBe(true);
  });

  it('reads blades from flags and a JSON file, IPv6 included', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vd-config-'));
    const file = join(dir, 'blades.json');
    writeFileSync(file, JSON.stringify([{ name: 'b1', address: 'blade1.example:7443' }, { name: 'b2', address: '[::1]:7443' }]));
    const c = parse('--blade', 'b3=10.0.0.3:7443', '--blades-file', file);
    expect(c.blades.map((b) => `${b.name}=${b.address}`)).toEqual(['b1=blade1.example:7443', 'b2=[::1]:7443', 'b3=10.0.0.3:7443']);
  });

  it('reads API keys from a file, one per line, skipping blanks and comments', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vd-config-'));
    const file = join(dir, 'keys');
    writeFileSync(file, `# portal\n${'a'.repeat(20)}\n\n${'b'.repeat(20)}\n`);
    const c = parseConfig([...TLS, '--api-keys-file', file])!;
    expect(c.apiKeys).toEqual([{ key: 'a'.repeat(20), role: 'admin' }, { key: 'b'.repeat(20), role: 'admin' }]);
  });

  it('gives each key in the file the role before it (read, operate, admin), and refuses an unknown role without echoing the key', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vd-config-'));
    const file = join(dir, 'keys');
    writeFileSync(file, `read ${'r'.repeat(20)}\noperate\t${'o'.repeat(20)}\nadmin ${'a'.repeat(20)}\n`);
    expect(parseConfig([...TLS, '--api-keys-file', file])!.apiKeys.map((k) => k.role)).toEqual(['read', 'operate', 'admin']);
    writeFileSync(file, `root ${'s'.repeat(20)}\n`);
    let message = '';
    try {
      parseConfig([...TLS, '--api-keys-file', file]);
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/line 1: expected "KEY" or "ROLE KEY"/);
    expect(message).not.toContain('s'.repeat(20));
  });

  it.each([
    [['--blade', 'nohostport'], /NAME=HOST:PORT/],
    [['--blade', 'a;id=1.2.3.4:5'], /blade name/],
    [['--blade', 'a=$(id):22'], /not a host name/],
    [['--blade', 'a=1.2.3.4:1', '--blade', 'a=1.2.3.5:1'], /twice/],
    [['--listen', 'localhost'], /HOST:PORT/],
    [['--placement', 'random'], /least-loaded or round-robin/],
    [['--start-attempts', '0'], /--start-attempts/],
    [['--health-interval-ms', '3000', '--down-after-ms', '2500'], /longer than --health-interval-ms/],
    [['--token-ttl', '1.5'], /--token-ttl/],
    [['--max-reconnect-keys', '0'], /--max-reconnect-keys must be an integer from 1/],
    [['--trust-proxy', 'example.com'], /--trust-proxy/],
    [['--allowed-origin', 'javascript:alert(1)'], /--allowed-origin/],
    [['--log-level', 'loud'], /--log-level/],
    [['--no-such-flag'], /Unknown option/],
    [['--insecure-agents'], /cannot be combined/],
  ])('refuses %j with a clear message', (args, message) => {
    expect(() => parse(...args)).toThrow(ConfigError);
    expect(() => parse(...args)).toThrow(message);
  });

  it('requires agent TLS (or --insecure-agents) and an API key of reasonable length', () => {
    expect(() => parseConfig(['--api-key', KEY])).toThrow(/agent mutual TLS/);
    expect(parseConfig(['--api-key', KEY, '--insecure-agents'])!.agentTls).toBeNull();
    expect(() => parseConfig([...TLS])).toThrow(/API key/);
    expect(() => parseConfig([...TLS, '--api-key', 'short'])).toThrow(/16 characters/);
  });

  it('derives allowed origins from --public-url, or leaves them to the proxy (own origin)', () => {
    expect(parse().allowedOrigins).toEqual([]);
    const c = parse('--public-url', 'https://desktops.example.org/');
    expect(c.publicUrl).toBe('https://desktops.example.org');
    expect(c.allowedOrigins).toEqual(['https://desktops.example.org']);
    expect(parse('--allowed-origin', 'https://a.example', '--allowed-origin', 'https://b.example:8443').allowedOrigins)
      .toEqual(['https://a.example', 'https://b.example:8443']);
  });

  it('refuses a --start-answer-ms that a silent connection would outlast (--http-idle-timeout-ms)', () => {
    expect(() => parse('--start-answer-ms', '60000')).toThrow(/--start-answer-ms must be below --http-idle-timeout-ms/);
    expect(parse('--start-answer-ms', '1000', '--http-idle-timeout-ms', '2000').startAnswerMs).toBe(1000);
  });

  it('takes the waits, intervals and limits that used to be constants as flags, with their documented defaults', () => {
    expect(parse()).toMatchObject({
      startWaitMs: 15_000, startPollMs: 50, startAnswerMs: 45_000, eventsIntervalMs: 1000, eventsHeartbeatMs: 15_000, maxBodyBytes: 16_384,
      maxWsMessageBytes: 65_536, wsHeartbeatMs: 30_000, desktopConnectTimeoutMs: 5000, badTokenLimit: 20,
      badTokenWindowMs: 60_000, revalidateIntervalMs: 500, agentKeepaliveMs: 10_000, agentKeepaliveTimeoutMs: 5000,
      desktopGoneGraceMs: 1000, maxDesktopReadBytes: 1_048_576,
    });
    expect(parse('--start-wait-ms', '0', '--start-poll-ms', '10', '--events-interval-ms', '250',
      '--events-heartbeat-ms', '100', '--max-body-bytes', '1024', '--max-ws-message-bytes', '1048576',
      '--ws-heartbeat-ms', '5000', '--desktop-connect-timeout-ms', '900', '--bad-token-limit', '3',
      '--bad-token-window-ms', '1000', '--revalidate-interval-ms', '50', '--agent-keepalive-ms', '1000',
      '--agent-keepalive-timeout-ms', '100', '--desktop-gone-grace-ms', '1', '--max-desktop-read-bytes', '4096')).toMatchObject({
      startWaitMs: 0, startPollMs: 10, eventsIntervalMs: 250, eventsHeartbeatMs: 100, maxBodyBytes: 1024,
      maxWsMessageBytes: 1_048_576, wsHeartbeatMs: 5000, desktopConnectTimeoutMs: 900, badTokenLimit: 3,
      badTokenWindowMs: 1000, revalidateIntervalMs: 50, agentKeepaliveMs: 1000, agentKeepaliveTimeoutMs: 100,
      desktopGoneGraceMs: 1, maxDesktopReadBytes: 4096,
    });
  });

  it.each([
    ['start-wait-ms', '600001'], ['start-poll-ms', '9'], ['events-interval-ms', '99'], ['events-heartbeat-ms', '0'],
    ['max-body-bytes', '1023'], ['max-body-bytes', '16k'], ['max-ws-message-bytes', '512'], ['ws-heartbeat-ms', 'soon'],
    ['desktop-connect-timeout-ms', '99'], ['bad-token-limit', '0'], ['bad-token-window-ms', '999'],
    ['revalidate-interval-ms', '49'], ['agent-keepalive-ms', '999'], ['agent-keepalive-timeout-ms', '1.5'],
    ['desktop-gone-grace-ms', '0'], ['max-desktop-read-bytes', '4095'],
  ])('refuses --%s %s, naming the flag and its range', (flag, value) => {
    expect(() => parse(`--${flag}`, value)).toThrow(ConfigError);
    expect(() => parse(`--${flag}`, value)).toThrow(new RegExp(`^--${flag} must be an integer from \\d+ to \\d+, got "${value.replace('.', '\\.')}"$`));
  });

  it('returns null for --help', () => {
    expect(parseConfig(['--help'])).toBeNull();
  });
});

describe('API keys kept out of ps', () => {
  it('takes keys from VNCDISPATCH_API_KEYS without any on the command line, and does not warn', () => {
    const c = parseConfig([...TLS], { VNCDISPATCH_API_KEYS: `${KEY},${KEY}-second\n` })!;
    expect(c.apiKeys).toEqual([{ key: KEY, role: 'admin' }, { key: `${KEY}-second`, role: 'admin' }]);
    expect(c.warnings).toEqual([]);
  });

  it('warns when a key is given with --api-key, where every local user can read it', () => {
    expect(parseConfig(['--api-key', KEY, ...TLS])!.warnings.join(' ')).toMatch(/readable|read it/);
  });
});
