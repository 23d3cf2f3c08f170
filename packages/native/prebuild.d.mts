export declare const ADDON_FILE: string;
export declare function libc(): 'glibc' | 'musl' | undefined;
export declare function prebuildTag(): string;
export declare function prebuildPath(root: string): string;
export declare function sourceBuildPath(root: string): string;
