"""Text generation (generation.py): settings and their /set parsing, the tokens that end a reply, batched
greedy answers that do not depend on the batch, streaming that equals the batch answer and stops when the
reader stops, and a chat that trims its oldest turns to fit the context."""
from __future__ import annotations

import threading
import time
from contextlib import closing

import pytest
import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from tunesmith.errors import TunesmithError
from tunesmith.generation import (Conversation, GenerationSettings, generate_batch, generation_config, model_context_length,
                                  render_prompt, stop_token_ids, stream_reply)

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
WORDS = ["<unk>", "<|im_start|>", "<|im_end|>", "\n", "system", "user", "assistant", "be", "brief", "hi", "hello", "you",
         "how", "are", "fine", "thanks", "bye", "now", "see", "soon", "a", "helpful", "bot", "name", "it", "</s>"]
ID = {w: i for i, w in enumerate(WORDS)}
GREEDY = GenerationSettings(temperature=0, max_new_tokens=12)


def chatml_tokenizer(eos: str = "</s>", words=WORDS, template: str | None = CHATML, special=("<|im_start|>", "<|im_end|>")):
    """A word-level tokenizer whose eos is NOT the template's end of turn (<|im_end|>), as with Llama 3, so the
    end-of-turn detection is what stops a reply."""
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(" +"), behavior="removed"),
                                                 pre_tokenizers.Split("\n", behavior="isolated")])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token=eos,
                                        additional_special_tokens=list(special))
    tokenizer.chat_template = template
    return tokenizer


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False,
                         bos_token_id=None, eos_token_id=ID["</s>"], pad_token_id=None)
    return LlamaForCausalLM(config).eval()


def bigram_llama(chain: dict[str, str]) -> LlamaForCausalLM:
    """A tiny Llama that only looks at the last token: the layers add nothing to the residual stream (their output
    projections are zero), embeddings are one-hot, and lm_head maps each token to its successor in `chain`."""
    model = tiny_llama()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.copy_(torch.eye(len(WORDS), 32))
        model.lm_head.weight.zero_()
        for word, successor in chain.items():
            model.lm_head.weight[ID[successor], ID[word]] = 10.0
    return model


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


# a reply "hello you" then <|im_end|>; past it the model would go on, so a missed stop shows as extra words
REPLY_CHAIN = {"\n": "hello", "hello": "you", "you": "<|im_end|>", "<|im_end|>": "bye"}
# "hello you hello you ..." and never an end of turn: replies run to max_new_tokens
ENDLESS_CHAIN = {"\n": "hello", "hello": "you", "you": "hello"}


# -- settings ---------------------------------------------------------------------------------------

def test_chat_defaults_and_greedy_derived_from_temperature():
    s = GenerationSettings()
    assert (s.temperature, s.top_p, s.max_new_tokens, s.repetition_penalty, s.seed) == (0.7, 0.9, 256, 1.0, None)
    assert s.do_sample is True
    assert GenerationSettings(temperature=0).do_sample is False


def test_update_parses_text_as_the_slash_commands_give_it():
    s = GenerationSettings()
    s.update("temperature", "0.2")
    s.update("max_new_tokens", " 64 ")
    s.update("seed", "7")
    assert (s.temperature, s.max_new_tokens, s.seed) == (0.2, 64, 7)
    assert isinstance(s.max_new_tokens, int) and isinstance(s.temperature, float)
    s.update("temperature", "0")
    assert s.do_sample is False
    s.update("seed", "none")
    assert s.seed is None


@pytest.mark.parametrize("name, value, message", [
    ("temprature", "0.2", r"^Unknown generation setting 'temprature'; the settings are temperature, top_p, max_new_tokens, "
                          r"repetition_penalty, seed\. Did you mean 'temperature'\?$"),
    ("temperature", "hot", r"^temperature must be a number >= 0 \(0 means greedy\), not 'hot'\.$"),
    ("temperature", "-1", r"^temperature must be a number >= 0"),
    ("temperature", "inf", r"^temperature must be a number >= 0"),
    ("top_p", "1.5", r"^top_p must be a number above 0 and at most 1, not '1\.5'\.$"),
    ("top_p", "0", r"^top_p must be"),
    ("max_new_tokens", "2.5", r"^max_new_tokens must be a whole number >= 1, not '2\.5'\.$"),
    ("max_new_tokens", "0", r"^max_new_tokens must be"),
    ("repetition_penalty", "nan", r"^repetition_penalty must be a number above 0"),
    ("seed", "lucky", r"^seed must be a whole number, or none, not 'lucky'\.$"),
    ("do_sample", "true", r"^do_sample follows the temperature: set temperature 0 for greedy"),
])
def test_update_refuses_an_unknown_name_or_a_bad_value_in_one_sentence(name, value, message):
    s = GenerationSettings()
    before = GenerationSettings()
    with pytest.raises(TunesmithError, match=message):
        s.update(name, value)
    assert s == before  # nothing changed


def test_bad_settings_given_in_code_are_refused_too():
    with pytest.raises(TunesmithError, match=r"^Generation setting top_p must be a number above 0 and at most 1, not 2"):
        GenerationSettings(top_p=2)


# -- stop tokens and the generation config -----------------------------------------------------------

def test_stop_tokens_are_the_eos_the_generation_config_eos_list_and_the_template_end_of_turn():
    tokenizer = chatml_tokenizer()
    assert stop_token_ids(tokenizer) == [ID["</s>"], ID["<|im_end|>"]]
    model = tiny_llama()
    model.generation_config.eos_token_id = [ID["</s>"], ID["bye"]]
    assert stop_token_ids(tokenizer, model) == [ID["</s>"], ID["bye"], ID["<|im_end|>"]]
    assert stop_token_ids(tokenizer, GenerationConfig(eos_token_id=ID["now"])) == [ID["</s>"], ID["now"], ID["<|im_end|>"]]


@pytest.mark.parametrize("end_of_turn", ["<|eot_id|>", "<end_of_turn>"])
def test_llama3_and_gemma_end_of_turn_tokens_are_stop_tokens_when_their_template_uses_them(end_of_turn):
    words = WORDS + [end_of_turn]
    template = CHATML.replace("<|im_end|>", end_of_turn)
    tokenizer = chatml_tokenizer(words=words, template=template, special=("<|im_start|>", end_of_turn))
    assert stop_token_ids(tokenizer) == [ID["</s>"], len(WORDS)]  # <|im_end|> is in the vocabulary but not in this template


def test_a_tokenizer_and_model_with_no_end_token_is_refused():
    tokenizer = chatml_tokenizer(template="{{ messages[-1]['content'] }}")
    tokenizer.eos_token = None
    with pytest.raises(TunesmithError, match="no end-of-sequence or end-of-turn token, so a reply could never end"):
        stop_token_ids(tokenizer, GenerationConfig())


def test_generation_config_carries_the_settings_the_stops_and_an_eos_pad():
    model, tokenizer = tiny_llama(), chatml_tokenizer()
    sampled = generation_config(model, tokenizer, GenerationSettings(temperature=0.5, top_p=0.8, max_new_tokens=9))
    assert (sampled.do_sample, sampled.temperature, sampled.top_p, sampled.max_new_tokens) == (True, 0.5, 0.8, 9)
    assert sampled.eos_token_id == [ID["</s>"], ID["<|im_end|>"]] and sampled.pad_token_id == ID["</s>"]
    greedy = generation_config(model, tokenizer, GREEDY)
    assert greedy.do_sample is False and greedy.temperature is None


# -- batched answers --------------------------------------------------------------------------------

def test_a_reply_stops_at_the_template_end_of_turn_although_the_eos_is_another_token():
    model, tokenizer = bigram_llama(REPLY_CHAIN), chatml_tokenizer()
    assert generate_batch(model, tokenizer, [user("hi")], GREEDY) == ["hello you"]
    # the same model left to the tokenizer's eos alone runs past the end of turn: the stop above is real
    prompt = torch.tensor([render_prompt(tokenizer, user("hi"))])
    ran_on = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=5,
                            eos_token_id=ID["</s>"], pad_token_id=ID["</s>"])
    assert tokenizer.convert_ids_to_tokens(ran_on[0, prompt.shape[1]:]) == ["hello", "you", "<|im_end|>", "bye", "<unk>"]


def test_max_new_tokens_caps_a_reply():
    model, tokenizer = bigram_llama(ENDLESS_CHAIN), chatml_tokenizer()
    assert generate_batch(model, tokenizer, [user("hi")], GenerationSettings(temperature=0, max_new_tokens=3)) == ["hello you hello"]


PROMPTS = [user("hi"), user("how are you now"), user("be"), user("see you soon bye now how are you fine thanks a bot"),
           user("hello it"), [{"role": "system", "content": "be brief"}, *user("name")]]


def test_greedy_answers_do_not_depend_on_the_batch_and_come_back_in_input_order():
    model, tokenizer = tiny_llama(), chatml_tokenizer()
    alone = generate_batch(model, tokenizer, PROMPTS, GREEDY, batch_size=1)
    together = generate_batch(model, tokenizer, PROMPTS, GREEDY, batch_size=4)
    assert together == alone
    assert len(set(alone)) >= 3 and all(alone)  # different prompts, different non-empty answers: the test can see a mix-up
    assert generate_batch(model, tokenizer, PROMPTS[::-1], GREEDY, batch_size=4) == alone[::-1]
    # the left-padded batch without its attention mask answers differently: the mask is what makes the two agree
    rows = [render_prompt(tokenizer, c) for c in PROMPTS[:4]]
    width, config = max(map(len, rows)), generation_config(model, tokenizer, GREEDY)
    ids = torch.tensor([[config.pad_token_id] * (width - len(r)) + r for r in rows])
    unmasked = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
    assert [tokenizer.decode(o[width:], skip_special_tokens=True) for o in unmasked] != alone[:4]


def test_generation_leaves_the_tokenizer_and_the_models_training_flag_as_they_were():
    model, tokenizer = tiny_llama(), chatml_tokenizer()
    model.train()
    generate_batch(model, tokenizer, PROMPTS[:3], GREEDY, batch_size=2)
    assert model.training is True
    assert tokenizer.pad_token is None and tokenizer.padding_side == "right"


def test_a_seed_repeats_sampled_answers():
    model, tokenizer = tiny_llama(), chatml_tokenizer()
    sampled = GenerationSettings(temperature=1.0, top_p=1.0, max_new_tokens=8, seed=3)
    first = generate_batch(model, tokenizer, PROMPTS, sampled)
    assert generate_batch(model, tokenizer, PROMPTS, sampled) == first
    sampled.update("seed", "4")
    assert generate_batch(model, tokenizer, PROMPTS, sampled) != first


@pytest.mark.parametrize("conversation, message", [
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], r"^Conversation 1 must be a list of messages ending with the user's turn"),
    ([], r"^Conversation 1 must be a list of messages ending with the user's turn"),
])
def test_a_conversation_that_does_not_end_with_the_user_is_refused(conversation, message):
    with pytest.raises(TunesmithError, match=message):
        generate_batch(tiny_llama(), chatml_tokenizer(), [conversation], GREEDY)


def test_a_tokenizer_without_a_chat_template_is_refused_with_the_fix():
    with pytest.raises(TunesmithError, match="has no chat template.*--chat-template chatml"):
        generate_batch(tiny_llama(), chatml_tokenizer(template=None), [user("hi")], GREEDY)


def test_a_template_that_refuses_the_messages_is_one_sentence():
    strict = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}" + CHATML
    with pytest.raises(TunesmithError, match=r"^The model's chat template refused conversation 2: System role not supported; fix"):
        generate_batch(tiny_llama(), chatml_tokenizer(template=strict), [user("hi"), PROMPTS[-1]], GREEDY)


# -- streaming --------------------------------------------------------------------------------------

def worker_alive() -> bool:
    return any(t.name == "tunesmith-generate" and t.is_alive() for t in threading.enumerate())


def test_streamed_pieces_join_to_the_batch_answer():
    model, tokenizer = tiny_llama(), chatml_tokenizer()
    for conversation in PROMPTS[:3]:
        pieces = list(stream_reply(model, tokenizer, conversation, GREEDY))
        assert len(pieces) > 1 and all(pieces)  # it streams, not one string at the end, and sends no empty pieces
        assert "".join(pieces) == generate_batch(model, tokenizer, [conversation], GREEDY)[0]
    assert "".join(stream_reply(bigram_llama(REPLY_CHAIN), tokenizer, user("hi"), GREEDY)) == "hello you"
    assert not worker_alive()


def slowed(model, calls: list) -> LlamaForCausalLM:
    """Count forward passes, each taking a little while, so a stop shows in how many ran."""
    def hook(module, args, output):
        calls.append(1)
        time.sleep(0.01)
    model.register_forward_hook(hook)
    return model


def test_leaving_the_stream_early_stops_generation_at_once():
    calls: list = []
    model, tokenizer = slowed(bigram_llama(ENDLESS_CHAIN), calls), chatml_tokenizer()
    settings = GenerationSettings(temperature=0, max_new_tokens=300)
    for piece in stream_reply(model, tokenizer, user("hi"), settings):
        break
    assert not worker_alive() and len(calls) < 100  # a finished reply would have taken 300 forward passes


def test_ctrl_c_while_streaming_stops_generation_and_travels_on():
    calls: list = []
    model, tokenizer = slowed(bigram_llama(ENDLESS_CHAIN), calls), chatml_tokenizer()
    settings = GenerationSettings(temperature=0, max_new_tokens=300)
    with pytest.raises(KeyboardInterrupt):
        with closing(stream_reply(model, tokenizer, user("hi"), settings)) as pieces:
            for n, piece in enumerate(pieces):
                if n == 2:
                    raise KeyboardInterrupt
    assert not worker_alive() and len(calls) < 100


def test_an_error_inside_generate_reaches_the_reader_instead_of_hanging_it():
    model, tokenizer = tiny_llama(), chatml_tokenizer()
    calls: list = []

    def fail_on_third(module, args, output):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("out of memory, say")
    model.register_forward_hook(fail_on_third)
    with pytest.raises(RuntimeError, match="out of memory, say"):
        list(stream_reply(model, tokenizer, user("hi"), GREEDY))
    assert not worker_alive()


# -- the interactive conversation -------------------------------------------------------------------

def test_conversation_keeps_the_system_prompt_and_alternating_turns():
    chat = Conversation(chatml_tokenizer(), context_length=128, system_prompt="be brief")
    chat.add_user("hi")
    chat.add_assistant("hello")
    chat.add_user("how are you")
    assert [m["role"] for m in chat.messages] == ["system", "user", "assistant", "user"]
    with pytest.raises(TunesmithError, match="^The last user message has no answer yet"):
        chat.add_user("bye")
    chat.add_assistant("fine")
    with pytest.raises(TunesmithError, match="^An assistant reply must answer a user message"):
        chat.add_assistant("again")
    chat.reset()
    assert chat.messages == [{"role": "system", "content": "be brief"}]


def test_trim_drops_the_oldest_turns_to_fit_the_context_and_says_how_many():
    tokenizer = chatml_tokenizer()
    chat = Conversation(tokenizer, context_length=64, system_prompt="be brief")
    for question, answer in [("hi", "hello you"), ("how are you", "fine thanks"), ("bye now", "see you soon")]:
        chat.add_user(question)
        chat.add_assistant(answer)
    chat.add_user("name it")
    full = chat.prompt_tokens()  # 7 system + 13 + 15 + 15 + 7 + 3 (the assistant header) = 60
    assert full == 60 and chat.trim(max_new_tokens=2) is None
    assert chat.trim(max_new_tokens=20) == "Dropped the 2 oldest turns to fit the model's 64-token context beside 20 new tokens."
    assert [m["content"] for m in chat.messages] == ["be brief", "bye now", "see you soon", "name it"]
    assert chat.prompt_tokens() + 20 <= 64 and chat.dropped_turns == 2
    assert chat.trim(max_new_tokens=36) == "Dropped the 1 oldest turn to fit the model's 64-token context beside 36 new tokens."
    with pytest.raises(TunesmithError, match=r"^The message alone is 17 tokens .* more than the 64-token context leaves "
                                             r"beside 50 new tokens; shorten it or lower max_new_tokens"):
        chat.trim(max_new_tokens=50)
    assert [m["content"] for m in chat.messages] == ["be brief"]  # the refused question is taken back: the chat goes on
    chat.add_user("hi")
    assert chat.trim(max_new_tokens=40) is None


def test_context_length_comes_from_the_model_config():
    assert model_context_length(tiny_llama()) == 128


# -- a real chat model, where one is cached --------------------------------------------------------

def cached_chat_model():
    from tunesmith.assets.fetch import cache_dir
    folders = sorted(p.parent for p in (cache_dir() / "models").glob("**/config.json") if (p.parent / "chat_template.jinja").is_file())
    return folders[0] if folders else None


@pytest.mark.slow
def test_a_real_chat_model_answers_stops_and_streams_the_same_text():
    folder = cached_chat_model()
    if folder is None:
        pytest.skip("no chat model cached under the tunesmith cache's models/ (smollm2-135m builds one on first use)")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    settings = GenerationSettings(temperature=0, max_new_tokens=24)
    prompts = [user("What is the capital of France?"),
               [{"role": "system", "content": "You answer in one short sentence."}, *user("What colour is the sky on a clear day?")]]
    alone = generate_batch(model, tokenizer, prompts, settings, batch_size=1)
    assert generate_batch(model, tokenizer, prompts, settings, batch_size=2) == alone
    assert "Paris" in alone[0]
    assert all("<|im_end|>" not in a and "assistant" not in a.lower()[:12] for a in alone)
    # the first answer ended at its end of turn, well before the cap
    assert len(tokenizer(alone[0], add_special_tokens=False).input_ids) < settings.max_new_tokens
    assert "".join(stream_reply(model, tokenizer, prompts[0], settings)) == alone[0]
