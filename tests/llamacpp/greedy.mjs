// Greedy answers from a GGUF file in llama.cpp (node-llama-cpp's prebuilt CPU binary).
// Usage: node greedy.mjs REQUEST.json  (REQUEST: {"node_modules", "model", "conversations", "max_tokens"})
// Prints JSON: per conversation, the prompt as the GGUF's chat template renders it in node-llama-cpp
// (JinjaTemplateChatWrapper on tokenizer.chat_template, the wrapper node-llama-cpp resolves for a custom
// template), its tokens, and the greedy answer's tokens and text (up to an end-of-generation token).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const request = JSON.parse(readFileSync(process.argv[2], "utf8"));
const lib = await import(pathToFileURL(join(request.node_modules, "node-llama-cpp", "dist", "index.js")).href);
const llama = await lib.getLlama({ gpu: false, build: "never", logLevel: "error" });
const model = await llama.loadModel({ modelPath: request.model });
const template = model.fileInfo.metadata.tokenizer.chat_template;
const wrapper = new lib.JinjaTemplateChatWrapper({ template });
const resolved = lib.resolveChatWrapper(model);
const context = await model.createContext({ contextSize: 1024, threads: 1 });
const out = { resolved_wrapper: resolved?.wrapperName ?? null, results: [] };
for (const conversation of request.conversations) {
  const chatHistory = conversation.map((m) =>
    m.role === "assistant" ? { type: "model", response: [m.content] }
      : m.role === "system" ? { type: "system", text: m.content } : { type: "user", text: m.content });
  chatHistory.push({ type: "model", response: [] });
  const { contextText } = wrapper.generateContextState({ chatHistory });
  const promptTokens = contextText.tokenize(model.tokenizer);
  const sequence = context.getSequence();
  const answer = [];
  for await (const token of sequence.evaluate(promptTokens, { temperature: 0 })) {
    if (model.isEogToken(token) || answer.length >= request.max_tokens) break;
    answer.push(token);
  }
  sequence.dispose();
  out.results.push({ prompt_text: contextText.toString(), prompt_tokens: promptTokens, answer_tokens: answer,
                     answer: model.detokenize(answer) });
}
console.log(JSON.stringify(out));
await context.dispose();
await model.dispose();
