/**
 * What PostgreSQL would refuse, or we do not accept, in a parsed JSON body: nesting deeper
 * than `maxDepth`, or a NUL character in any string or key (jsonb and text cannot hold \u0000).
 * Walks without recursion.
 */
export function inspectJson(value: unknown, maxDepth: number): 'too_deep' | 'nul' | null {
  const stack: Array<[unknown, number]> = [[value, 1]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (typeof v === 'string') {
      if (v.includes('\u0000')) return 'nul';
      continue;
    }
    if (v === null || typeof v !== 'object') continue;
    if (depth > maxDepth) return 'too_deep';
    if (Array.isArray(v)) {
      for (const child of v) stack.push([child, depth + 1]);
    } else {
      for (const [k, child] of Object.entries(v)) {
        if (k.includes('\u0000')) return 'nul';
        stack.push([child, depth + 1]);
      }
    }
  }
  return null;
}

export const jsonBytes = (value: unknown) => Buffer.byteLength(JSON.stringify(value) ?? '', 'utf8');
