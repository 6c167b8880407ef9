import { z } from '../../lib/zod';

/**
 * Body paths a project encrypts: `*` (the whole body) or `body.<key>[.<key>|.*]…`, where `*`
 * matches every element of an array or every value of an object. Parsed into segments after
 * `body` ([] is the whole body).
 */
const SEGMENT = /^(?:[A-Za-z0-9_-]{1,64}|\*)$/;
const MAX_DEPTH = 8;
const HINT = 'must be "*" (the whole body) or a path like body.text or body.attachments.*.url';

export function parseFieldPath(path: string): string[] | string {
  if (path === '*' || path === 'body') return [];
  if (!path.startsWith('body.')) return HINT;
  const segments = path.slice(5).split('.');
  if (segments.length > MAX_DEPTH) return `may have at most ${MAX_DEPTH} segments after "body"`;
  const bad = segments.find((s) => !SEGMENT.test(s));
  if (bad !== undefined)
    return `segment "${bad}" is not allowed: use letters, digits, "_" or "-" (1–64 characters), or "*"; ${HINT}`;
  return segments;
}

const covers = (a: string[], b: string[]) => a.length < b.length && a.every((s, i) => s === b[i] || s === '*');

export const encryptedFieldsSchema = z
  .array(z.string().max(256))
  .max(50)
  .superRefine((paths, ctx) => {
    const parsed: Array<string[] | null> = paths.map((p, i) => {
      const r = parseFieldPath(p);
      if (typeof r === 'string') {
        ctx.addIssue({ code: 'custom', path: [i], message: r });
        return null;
      }
      return r;
    });
    parsed.forEach((a, i) => {
      if (!a) return;
      parsed.forEach((b, j) => {
        if (!b || i === j) return;
        if (covers(a, b)) ctx.addIssue({ code: 'custom', path: [j], message: `is already covered by "${paths[i]}"` });
        else if (j > i && a.join('.') === b.join('.'))
          ctx.addIssue({ code: 'custom', path: [j], message: `repeats "${paths[i]}"` });
      });
    });
  })
  .openapi({
    description:
      'Body paths encrypted at rest for messages written after this is set: "*" or e.g. "body.text", "body.attachments.*.url".',
  });

/** Parsed paths of a project's settings, or null when it encrypts nothing. Cached per settings object. */
const parsedOf = new WeakMap<object, string[][] | null>();
export function encryptedPaths(settings: Record<string, unknown>): string[][] | null {
  let paths = parsedOf.get(settings);
  if (paths !== undefined) return paths;
  const raw = settings.encrypted_fields;
  paths = null;
  if (Array.isArray(raw) && raw.length > 0) {
    const all = raw.map((p) => (typeof p === 'string' ? parseFieldPath(p) : 'invalid'));
    if (all.every((p) => typeof p !== 'string')) paths = all;
  }
  parsedOf.set(settings, paths);
  return paths;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Replaces each value found at `segments` with seal(value, its concrete path); copies on write. */
function sealAt(
  node: unknown,
  segments: string[],
  i: number,
  at: string[],
  seal: (value: unknown, at: string[]) => unknown,
): unknown {
  if (i === segments.length) return node === undefined ? node : seal(node, at);
  const seg = segments[i];
  if (Array.isArray(node)) {
    if (seg === '*') return node.map((v, k) => sealAt(v, segments, i + 1, [...at, String(k)], seal));
    const k = /^\d+$/.test(seg) ? Number(seg) : -1;
    if (k < 0 || k >= node.length) return node;
    const copy = node.slice();
    copy[k] = sealAt(node[k], segments, i + 1, [...at, seg], seal);
    return copy;
  }
  if (!isObject(node)) return node;
  if (seg === '*') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(node)) out[k] = sealAt(v, segments, i + 1, [...at, k], seal);
    return out;
  }
  if (!Object.hasOwn(node, seg)) return node;
  return { ...node, [seg]: sealAt(node[seg], segments, i + 1, [...at, seg], seal) };
}

export function sealPaths(body: unknown, paths: string[][], seal: (value: unknown, at: string[]) => unknown): unknown {
  let out = body;
  for (const p of paths) out = sealAt(out, p, 0, ['body'], seal);
  return out;
}

/**
 * Walks a stored body and replaces every string `match` recognises with open(string, path),
 * whatever the project's current settings say (they apply to new messages only). Returns the
 * same object when nothing matched.
 */
export function mapStrings(
  node: unknown,
  match: (s: string) => boolean,
  open: (s: string, at: string[]) => unknown,
  at: string[] = ['body'],
): unknown {
  if (typeof node === 'string') return match(node) ? open(node, at) : node;
  if (Array.isArray(node)) {
    let copy: unknown[] | null = null;
    for (let k = 0; k < node.length; k++) {
      const v = mapStrings(node[k], match, open, [...at, String(k)]);
      if (v !== node[k]) (copy ??= node.slice())[k] = v;
    }
    return copy ?? node;
  }
  if (isObject(node)) {
    let copy: Record<string, unknown> | null = null;
    for (const k of Object.keys(node)) {
      const v = mapStrings(node[k], match, open, [...at, k]);
      if (v !== node[k]) (copy ??= { ...node })[k] = v;
    }
    return copy ?? node;
  }
  return node;
}

/** Calls visit for every string in a JSON value (stops early when visit returns true). */
export function someString(node: unknown, visit: (s: string) => boolean): boolean {
  if (typeof node === 'string') return visit(node);
  if (Array.isArray(node)) return node.some((v) => someString(v, visit));
  if (isObject(node)) {
    for (const k in node) if (someString(node[k], visit)) return true;
  }
  return false;
}
