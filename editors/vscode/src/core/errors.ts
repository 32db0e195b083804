import type { ErrorInfo } from "./protocol";

/** A failure the daemon (or the bridge) reported: switch on `code`, show `message` and
 * `remediation`. */
export class RunForgeError extends Error {
  readonly code: string;
  readonly remediation: string;
  readonly details: Record<string, unknown>;

  constructor(info: ErrorInfo) {
    super(info.message);
    this.name = "RunForgeError";
    this.code = info.code;
    this.remediation = info.remediation ?? "";
    this.details = info.details ?? {};
  }

  /** One line for a notification: the message, then what to do. */
  describe(): string {
    return this.remediation ? `${this.message} — ${this.remediation}` : this.message;
  }
}

/** The bridge's own code: no daemon answered. */
export const DAEMON_UNAVAILABLE = "DAEMON_UNAVAILABLE";
export const WORKSPACE_NOT_TRUSTED = "WORKSPACE_NOT_TRUSTED";

export function asRunForgeError(err: unknown): RunForgeError {
  if (err instanceof RunForgeError) {
    return err;
  }
  const message = err instanceof Error ? err.message : String(err);
  return new RunForgeError({ code: "ADAPTER_ERROR", message, remediation: "", details: {} });
}
