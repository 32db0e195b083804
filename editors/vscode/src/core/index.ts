export * from "./bridge";
export * from "./errors";
export * from "./protocol";
export * from "./render";
export * from "./runs";
export * from "./service";
