/** Removes URL passwords, `password=` pairs and every known secret (raw and percent-encoded) from text. */
export function redact(text: string, secrets: readonly string[] = []): string {
  let out = text
    .replace(/(\b[a-z][a-z0-9+.-]*:\/\/[^:/?#\s@]*:)[^@\s]*@/gi, '$1***@')
    .replace(/(password\s*[=:]\s*)('[^']*'|"[^"]*"|[^\s&;]+)/gi, '$1***');
  for (const s of secrets) {
    if (s.length < 4) continue; // too short to redact without mangling ordinary words
    for (const form of new Set([s, encodeURIComponent(s)])) out = out.split(form).join('***');
  }
  return out;
}
