// The {{name}} agent: greets the caller, counts the visits, and renames.
import { Agent, END, Fail, exportAgent, s, say, session, tool } from './agentbox.js';

class {{Class}} extends Agent {
  static NAME = '{{name}}';
  static VERSION = '0.1.0';
  static DESCRIPTION = 'Greets the caller and counts the visits';
  static stateSchema = {
    visits: s.integer({ minimum: 0 }),
    name: s.string({ maxLength: 100 }).optional(),
  };

  // Own fields are session state: loaded before each turn, saved after it.
  visits = 0;
  name = null;

  onStart() {
    this.name = session.initialVariable('name') ?? null;
    say(`Hello, ${this.name ?? 'stranger'}!`);
  }

  onMessage(text) {
    this.visits += 1;
    say(`Visit ${this.visits}: you said ${text}`);
    if (text === 'bye') return END;
  }

  static tools = {
    rename: tool(
      'Changes the name the agent greets.',
      { name: s.string({ minLength: 1 }).describe('The new name.') },
      function ({ name }) {
        if (name === this.name) throw new Fail(`the name is already ${name}`);
        this.name = name;
        return { name };
      },
    ),
  };
}

export const agent = exportAgent({{Class}});
