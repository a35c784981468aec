// A small reader for the repository's Dockerfile: instructions grouped by stage, COPY's parts.
// Enough for the forms the Dockerfile uses (FROM … AS name, exec-form JSON, `\` continuations).

export interface Instruction {
  op: string;
  args: string;
}

export interface Stage {
  base: string;
  name: string;
  steps: Instruction[];
}

/** Instructions (continuation lines joined, comments dropped), grouped by stage. */
export function dockerfileStages(text: string): Stage[] {
  const stages: Stage[] = [];
  const logical = text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  for (const line of logical) {
    const [, op, args] = /^(\S+)\s+(.*)$/.exec(line)!;
    if (op!.toUpperCase() === 'FROM') {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args!)!;
      stages.push({ base: m[1]!, name: m[2] ?? String(stages.length), steps: [] });
    } else {
      stages.at(-1)!.steps.push({ op: op!.toUpperCase(), args: args! });
    }
  }
  return stages;
}

export const steps = (stage: Stage, op: string): Instruction[] => stage.steps.filter((s) => s.op === op);

/** COPY's --from stage, sources and destination. */
export function copyOf(args: string): { from?: string; sources: string[]; dest: string } {
  const words = args.split(/\s+/);
  const flags = words.filter((w) => w.startsWith('--'));
  const paths = words.filter((w) => !w.startsWith('--'));
  const from = flags.find((f) => f.startsWith('--from='))?.slice('--from='.length);
  return { ...(from ? { from } : {}), sources: paths.slice(0, -1), dest: paths.at(-1)! };
}

/** ENV KEY=value pairs of a stage (the KEY=value form only). */
export function envOf(stage: Stage): Record<string, string> {
  return Object.fromEntries(steps(stage, 'ENV').flatMap((e) => e.args.split(/\s+/).map((kv) => kv.split('=') as [string, string])));
}
