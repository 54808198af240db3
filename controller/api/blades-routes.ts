/** /api/v1/blades: list, register, and cordon / uncordon / drain blades. */
import type { FastifyInstance } from 'fastify';
import { isIP } from 'node:net';
import { parseHostPort } from '../../shared/host-port.js';
import type { BladeNetworks } from '../blades/blade-networks.js';
import type { BladeRegistry } from '../blades/registry.js';
import { checkBlade, ConfigError } from '../config.js';
import { BadRequestError, BladeAddressNotAllowedError, BladeBusyError, NotFoundError } from '../errors.js';
import type { SessionService } from '../sessions/session-service.js';
import type { BladeAdminState } from '../store/store.js';
import { authErrors, BLADE_NAME_PATTERN, changeErrors, commonErrors } from './schemas.js';

const nameParams = {
  type: 'object',
  required: ['name'],
  additionalProperties: false,
  properties: { name: { type: 'string', pattern: BLADE_NAME_PATTERN } },
} as const;

const ADMIN_ACTIONS: Record<'cordon' | 'uncordon' | 'drain', { state: BladeAdminState; summary: string }> = {
  cordon: { state: 'CORDONED', summary: 'Stop placing new sessions on a blade (running ones continue)' },
  uncordon: { state: 'ACTIVE', summary: 'Place new sessions on a blade again' },
  drain: { state: 'DRAINING', summary: 'Mark a blade as draining: no new sessions; it is empty once its sessions end' },
};

/**
 * Refuses, before anything is stored or dialled, a blade address outside --blade-networks. Host names are refused
 * too: a name whose DNS the caller controls could be re-pointed after the check (names stay possible through
 * --blade and --blades-file, which are the operator's own word).
 */
function assertAllowedAddress(address: string, networks: BladeNetworks): void {
  const { host } = parseHostPort(address, 'body/address');
  if (isIP(host) === 0) {
    throw new BladeAddressNotAllowedError('A blade registered through the API must be given by IP address (a host name '
      + 'could be re-pointed after this check); use --blade or --blades-file for names.');
  }
  if (!networks.allows(host)) {
    throw new BladeAddressNotAllowedError(networks.cidrs.length === 0
      ? 'This controller registers no blades through the API (--blade-networks none).'
      : `${host} is outside the networks blades may be registered in (--blade-networks ${networks.cidrs.join(',')}).`);
  }
}

export async function bladesRoutes(app: FastifyInstance,
  deps: { blades: BladeRegistry; sessions: SessionService; networks: BladeNetworks }): Promise<void> {
  const { blades, sessions, networks } = deps;

  app.get('/api/v1/blades', {
    config: { role: 'read' },
    schema: {
      operationId: 'listBlades',
      summary: 'List blades with state, sessions, capacity, load, last seen and last error',
      tags: ['blades'],
      response: {
        200: { type: 'object', required: ['blades'], properties: { blades: { type: 'array', items: { $ref: 'Blade#' } } } },
        ...authErrors,
      },
    },
  }, async () => ({ blades: await blades.views() }));

  app.get<{ Params: { name: string } }>('/api/v1/blades/:name', {
    config: { role: 'read' },
    schema: {
      operationId: 'getBlade',
      summary: 'Show one blade',
      tags: ['blades'],
      params: nameParams,
      response: { 200: { $ref: 'Blade#' }, ...commonErrors, 404: { $ref: 'Error#' } },
    },
  }, async (request) => {
    const b = blades.get(request.params.name);
    if (!b) throw new NotFoundError(`no blade named ${request.params.name}`);
    return (await blades.views()).find((v) => v.name === b.name);
  });

  app.post<{ Body: { name: string; address: string } }>('/api/v1/blades', {
    config: { role: 'admin' },
    schema: {
      operationId: 'registerBlade',
      summary: 'Register a blade (or confirm an existing registration)',
      description: 'The address must be an IP address inside --blade-networks (else 403 VD_ERR_BLADE_ADDRESS_NOT_ALLOWED, '
        + 'with nothing stored and nothing dialled).',
      tags: ['blades'],
      body: {
        type: 'object',
        required: ['name', 'address'],
        additionalProperties: false,
        properties: {
          name: { type: 'string', pattern: BLADE_NAME_PATTERN },
          address: { type: 'string', maxLength: 260, description: "The agent's HOST:PORT (IPv6 as [ADDR]:PORT)." },
        },
      },
      response: {
        200: { description: 'Already registered.', $ref: 'Blade#' },
        201: { description: 'Registered.', $ref: 'Blade#' },
        ...changeErrors,
        409: { $ref: 'Error#' },
      },
    },
  }, async (request, reply) => {
    let spec;
    try {
      spec = checkBlade(request.body.name, request.body.address, 'body');
    } catch (err) {
      if (err instanceof ConfigError) throw new BadRequestError(err.message);
      throw err;
    }
    assertAllowedAddress(spec.address, networks);
    const { blade, created } = await blades.register(spec);
    const view = (await blades.views()).find((v) => v.name === blade.name);
    return reply.code(created ? 201 : 200).send(view);
  });

  app.delete<{ Params: { name: string }; Querystring: { force: boolean } }>('/api/v1/blades/:name', {
    config: { role: 'admin' },
    schema: {
      operationId: 'removeBlade',
      summary: 'Remove a blade; refused (409) while it has live sessions unless ?force=true, which ends them first',
      tags: ['blades'],
      params: nameParams,
      querystring: {
        type: 'object',
        additionalProperties: false,
        properties: { force: { type: 'boolean', default: false, description: "End the blade's live sessions first." } },
      },
      response: {
        200: {
          type: 'object',
          required: ['name', 'removed', 'endedSessions'],
          properties: { name: { type: 'string' }, removed: { type: 'boolean' }, endedSessions: { type: 'integer' } },
        },
        ...changeErrors,
        404: { $ref: 'Error#' },
        409: { $ref: 'Error#' },
      },
    },
  }, async (request) => {
    const { name } = request.params;
    if (!blades.get(name) && !(await blades.views()).some((b) => b.name === name)) {
      throw new NotFoundError(`no blade named ${name}`);
    }
    const live = await sessions.list({ live: true, blade: name });
    if (live.length > 0 && !request.query.force) {
      throw new BladeBusyError(`blade ${name} has ${live.length} live session${live.length === 1 ? '' : 's'}; `
        + 'remove it with ?force=true to end them');
    }
    // Ended through the blade while it is still known, so each desktop is stopped and its viewers disconnected.
    for (const s of live) await sessions.end(s.id, 'blade-removed');
    if (!(await blades.remove(name))) throw new NotFoundError(`no blade named ${name}`);
    return { name, removed: true, endedSessions: live.length };
  });

  for (const [action, { state, summary }] of Object.entries(ADMIN_ACTIONS)) {
    app.post<{ Params: { name: string } }>(`/api/v1/blades/:name/${action}`, {
      config: { role: 'operate' },
      schema: {
        operationId: `${action}Blade`,
        summary,
        tags: ['blades'],
        params: nameParams,
        response: { 200: { $ref: 'Blade#' }, ...changeErrors, 404: { $ref: 'Error#' } },
      },
    }, async (request) => {
      const b = await blades.setAdminState(request.params.name, state);
      return (await blades.views()).find((v) => v.name === b.name);
    });
  }
}
