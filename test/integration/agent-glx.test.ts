/**
 * GLX is off unless the operator asks for it: it makes every start load Mesa's llvmpipe (about 100 ms and 50 MB per
 * desktop), and what people run in a browser desktop draws without it. An operator with OpenGL applications turns it
 * on with --xvnc-glx, and X clients in the desktop then see the extension. User vdtest105.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { agentClient, call, endDesktop, startAgent, type AgentProcess } from '../helpers/agent-process.js';
import { makePki } from '../helpers/certs.js';
import { desktopOf, runInDesktop } from '../helpers/desktop-x.js';
import { testUser } from '../helpers/users.js';

const U = testUser(105);
let agent: AgentProcess | undefined;

afterEach(async () => {
  await agent?.stop();
  agent = undefined;
});

/** The X extensions an X client in the user's new desktop sees, from xdpyinfo. */
async function extensionsOfNewDesktop(args: string[]): Promise<string> {
  const pki = makePki();
  agent = await startAgent({ pki, args });
  const client = agentClient(agent.address, pki);
  const { session } = await call(client, client.startSession, { username: U, password: 'glx12345' });
  try {
    const out = await runInDesktop(desktopOf(U, session!.display, session!.pid), ['xdpyinfo', '-queryExtensions']);
    expect(out.code).toBe(0);
    return out.stdout;
  } finally {
    await endDesktop(client, session!);
    client.close();
  }
}

describe("a desktop's OpenGL (GLX)", () => {
  it('is not offered by default, and the desktop still has its other extensions', async () => {
    const ext = await extensionsOfNewDesktop([]);
    expect(ext).toMatch(/^\s+RANDR\b/m);
    expect(ext).not.toMatch(/^\s+GLX\b/m);
  });

  it('is offered with --xvnc-glx', async () => {
    expect(await extensionsOfNewDesktop(['--xvnc-glx'])).toMatch(/^\s+GLX\b/m);
  });
});
