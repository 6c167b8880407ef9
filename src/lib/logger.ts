import pino from 'pino';

export type Logger = pino.Logger;

/** JSON logs; credentials and bodies are redacted wherever they could appear. */
export function createLogger(level: string, name = 'progressdb', destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
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
  };
  // A destination other than stdout is for tests that read what was logged.
  return destination ? pino(options, destination) : pino(options);
}
