// The Vercel AI SDK against the sidecar: `node clients.mjs <baseURL> <model>` prints one JSON
// object with what generateText, streamText and generateObject returned (or their errors).
import { createOpenAI } from "@ai-sdk/openai";
import { generateObject, generateText, streamText } from "ai";
import { z } from "zod";

const [baseURL, modelName] = process.argv.slice(2);
const openai = createOpenAI({ baseURL, apiKey: "sk-test" });
const model = openai(modelName); // the Responses API, the SDK's default
const out = {};
async function run(name, fn) {
  try {
    out[name] = await fn();
  } catch (err) {
    out[name] = { error: String(err && err.message ? err.message : err) };
  }
}
await run("generateText", async () => (await generateText({ model, prompt: "Hi" })).text);
await run("streamText", async () => {
  const result = streamText({ model, prompt: "Hi" });
  let text = "";
  for await (const part of result.textStream) text += part;
  return text;
});
await run("generateObject", async () => {
  const { object } = await generateObject({
    model,
    schema: z.object({ city: z.string() }),
    prompt: "Where?",
  });
  return object;
});
process.stdout.write(JSON.stringify(out));
