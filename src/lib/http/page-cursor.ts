import { badRequest } from '../errors';
import { z } from '../zod';

/**
 * Opaque page cursors, as the thread list makes them: base64url of a JSON array. These name
 * the list they belong to first (and the thread or message), so a cursor of another list, or
 * of another thread's members, is refused instead of silently paging something else.
 */
export type CursorValue = string | number;

export function encodePageCursor(list: string, ...position: CursorValue[]): string {
  return Buffer.from(JSON.stringify([list, ...position])).toString('base64url');
}

/**
 * The position a cursor of `list` holds (the elements after the list name), checked against
 * `position` (a z.tuple); 400 problem+json for anything else.
 */
export function decodePageCursor<S extends z.ZodType>(cursor: string, list: string, position: S): z.output<S> {
  let value: unknown[] = [];
  try {
    const json: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (Array.isArray(json)) value = json as unknown[];
  } catch {
    // not JSON: refused below
  }
  const parsed = value[0] === list ? position.safeParse(value.slice(1)) : undefined;
  if (!parsed || !parsed.success)
    throw badRequest('cursor is not valid: pass the next_cursor of a previous page unchanged.');
  return parsed.data;
}

/** An RFC 3339 UTC timestamp as the database returns it (microseconds), for keyset cursors. */
export const cursorTimestamp = z
  .string()
  .regex(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$/)
  .refine((s) => !Number.isNaN(Date.parse(s)));

/** `limit` and `cursor` of a cursor-paginated list, with its own default and ceiling. */
export function pageQuery(defaultLimit: number, maxLimit: number) {
  return z
    .object({
      limit: z.coerce
        .number()
        .int()
        .min(1)
        .max(maxLimit)
        .default(defaultLimit)
        .openapi({ description: `Items per page (default ${defaultLimit}, at most ${maxLimit})` }),
      cursor: z
        .string()
        .max(512)
        .optional()
        .openapi({ description: 'The next_cursor of the previous page, unchanged' }),
    })
    .strict();
}
