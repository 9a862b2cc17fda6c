// Parsing of every `liveavatar` flag (cli_parse.h): reference names and defaults, validation errors, str2bool,
// warnings for flags the reference ignores, subcommands and help.
#include <gtest/gtest.h>

#include <cstdlib>

#include <string>
#include <vector>

#include "cli_parse.h"
#include "liveavatar/pipeline/options.h"

namespace liveavatar::cli {
namespace {

ParsedCommand MustParse(const std::vector<std::string>& args) {
  auto r = ParseCommandLine(args);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : ParsedCommand{};
}

std::string ParseError(const std::vector<std::string>& args) {
  auto r = ParseCommandLine(args);
  EXPECT_FALSE(r.ok()) << "expected an error for the command line";
  return r.ok() ? "" : r.status().message();
}

bool HasWarning(const ParsedCommand& c, const std::string& needle) {
  for (const auto& w : c.warnings) {
    if (w.find(needle) != std::string::npos) return true;
  }
  return false;
}

TEST(CliParse, DefaultsFollowTheLaunchScripts) {
  unsetenv("LIVEAVATAR_CKPT_DIR");  // the two flags that read the environment
  unsetenv("LIVEAVATAR_LOG_LEVEL");
  const ParsedCommand c = MustParse({"generate"});
  EXPECT_EQ(c.command, Command::kGenerate);
  const auto& g = c.run.generate;
  EXPECT_EQ(g.task, "s2v-14B");
  EXPECT_EQ(g.size, "");  // resolved by world size: 704*384 / 720*400
  EXPECT_EQ(pipeline::DefaultSize(1), "704*384");
  EXPECT_EQ(pipeline::DefaultSize(5), "720*400");
  EXPECT_EQ(g.ckpt_dir, "ckpt/Wan2.2-S2V-14B/");
  EXPECT_EQ(g.num_clip, 10000);
  EXPECT_EQ(g.infer_frames, 48);
  EXPECT_EQ(g.sample_steps, 4);
  EXPECT_EQ(g.sample_solver, "euler");
  EXPECT_EQ(g.base_seed, 420);
  EXPECT_TRUE(g.load_lora);
  EXPECT_EQ(g.lora_path_dmd, "Quark-Vision/Live-Avatar");
  EXPECT_FALSE(g.sample_shift.has_value());
  EXPECT_FALSE(g.sample_guide_scale.has_value());
  EXPECT_FALSE(g.frame_num.has_value());
  EXPECT_EQ(g.rolling_sink_d, -1);
  EXPECT_EQ(c.run.parallel.num_gpus_dit, 4);
  EXPECT_EQ(c.run.parallel.ulysses_size, 1);
  EXPECT_FALSE(c.run.parallel.enable_vae_parallel);
  EXPECT_FALSE(c.run.memory.offload_model.has_value());
  EXPECT_FALSE(c.run.memory.fp8);  // opt-in, as the reference argparse; scripts pass --fp8
  EXPECT_TRUE(c.run.memory.convert_model_dtype);
  EXPECT_EQ(c.run.output.save_dir, "./output/");
  EXPECT_EQ(c.run.output.crf, 10);
  EXPECT_EQ(c.log_level, "info");
  EXPECT_TRUE(c.warnings.empty());
}

TEST(CliParse, EveryGenerateFlag) {
  const ParsedCommand c = MustParse({
      "generate", "--image", "a.jpg", "--audio", "a.wav", "--prompt", "a dwarf", "--pose_video", "p.mp4",
      "--use_prompt_extend", "--prompt_extend_method", "dashscope", "--prompt_extend_model", "qwen",
      "--prompt_extend_target_lang", "en", "--enable_tts", "--tts_prompt_audio", "v.wav", "--tts_prompt_text",
      "hi", "--tts_text", "hello", "--use_dataset", "--dataset_sample_idx", "3", "--task", "s2v-14B", "--ckpt_dir",
      "/ck", "--no_load_lora", "--lora_path_dmd", "l.safetensors", "--training_config", "t.yaml", "--lora_path",
      "x.pt", "--using_merged_ckpt", "--size", "720*400", "--num_clip", "7", "--infer_frames", "80",
      "--sample_steps", "3", "--sample_solver", "unipc", "--base_seed", "-1", "--rolling_sink_d", "17",
      "--sample_shift", "5.5", "--sample_guide_scale", "0", "--frame_num", "81", "--start_from_ref",
      "--drop_motion_noisy", "--num_gpus_dit", "2", "--ulysses_size", "2", "--enable_vae_parallel",
      "--single_gpu", "--t5_fsdp", "--dit_fsdp", "--fsdp_prefetch", "2", "--nproc_per_node", "5", "--threads",
      "3", "--offload_model", "False", "--offload_kv_cache", "--t5_cpu", "--no_fp8", "--no_convert_model_dtype",
      "--enable_online_decode", "--max_gpu_mem_gb", "23.5", "--auto_plan", "--vae_tiling", "--save_file",
      "o.mp4", "--save_dir", "out/", "--crf", "18", "--preset", "fast", "--report", "r.json", "--log-level",
      "debug"});
  const auto& g = c.run.generate;
  EXPECT_EQ(g.image, "a.jpg");
  EXPECT_EQ(g.audio, "a.wav");
  EXPECT_EQ(g.prompt, "a dwarf");
  EXPECT_EQ(g.pose_video, "p.mp4");
  EXPECT_TRUE(g.use_prompt_extend);
  EXPECT_EQ(g.prompt_extend_method, "dashscope");
  EXPECT_EQ(g.prompt_extend_model, "qwen");
  EXPECT_EQ(g.prompt_extend_target_lang, "en");
  EXPECT_TRUE(g.enable_tts);
  EXPECT_EQ(g.tts_prompt_audio, "v.wav");
  EXPECT_EQ(g.tts_prompt_text, "hi");
  EXPECT_EQ(g.tts_text, "hello");
  EXPECT_TRUE(g.use_dataset);
  EXPECT_EQ(g.dataset_sample_idx, 3);
  EXPECT_EQ(g.ckpt_dir, "/ck");
  EXPECT_FALSE(g.load_lora);
  EXPECT_EQ(g.lora_path_dmd, "l.safetensors");
  EXPECT_EQ(g.training_config, "t.yaml");
  EXPECT_EQ(g.lora_path, "x.pt");
  EXPECT_TRUE(g.using_merged_ckpt);
  EXPECT_EQ(g.size, "720*400");
  EXPECT_EQ(g.num_clip, 7);
  EXPECT_EQ(g.infer_frames, 80);
  EXPECT_EQ(g.sample_steps, 3);
  EXPECT_EQ(g.sample_solver, "unipc");
  EXPECT_EQ(g.base_seed, -1);
  EXPECT_EQ(g.rolling_sink_d, 17);
  ASSERT_TRUE(g.sample_shift.has_value());
  EXPECT_DOUBLE_EQ(*g.sample_shift, 5.5);
  ASSERT_TRUE(g.sample_guide_scale.has_value());
  EXPECT_DOUBLE_EQ(*g.sample_guide_scale, 0.0);
  ASSERT_TRUE(g.frame_num.has_value());
  EXPECT_EQ(*g.frame_num, 81);
  EXPECT_TRUE(g.start_from_ref);
  EXPECT_TRUE(g.drop_motion_noisy);
  const auto& p = c.run.parallel;
  EXPECT_EQ(p.num_gpus_dit, 2);
  EXPECT_EQ(p.ulysses_size, 2);
  EXPECT_TRUE(p.enable_vae_parallel);
  EXPECT_TRUE(p.single_gpu);
  EXPECT_TRUE(p.t5_fsdp);
  EXPECT_TRUE(p.dit_fsdp);
  EXPECT_EQ(p.fsdp_prefetch, 2);
  EXPECT_EQ(p.nproc_per_node, 5);
  EXPECT_EQ(p.threads, 3);
  const auto& m = c.run.memory;
  ASSERT_TRUE(m.offload_model.has_value());
  EXPECT_FALSE(*m.offload_model);
  EXPECT_TRUE(m.offload_kv_cache);
  EXPECT_TRUE(m.t5_cpu);
  EXPECT_FALSE(m.fp8);
  EXPECT_FALSE(m.convert_model_dtype);
  EXPECT_TRUE(m.enable_online_decode);
  EXPECT_DOUBLE_EQ(m.max_gpu_mem_gb, 23.5);
  EXPECT_TRUE(m.auto_plan);
  EXPECT_TRUE(m.vae_tiling);
  const auto& o = c.run.output;
  EXPECT_EQ(o.save_file, "o.mp4");
  EXPECT_EQ(o.save_dir, "out/");
  EXPECT_EQ(o.crf, 18);
  EXPECT_EQ(o.preset, "fast");
  EXPECT_EQ(o.report, "r.json");
  EXPECT_EQ(c.log_level, "debug");
  // Every flag the reference ignores or we do not support was warned about, one line each.
  for (const char* f : {"--sample_shift", "--sample_guide_scale", "--sample_solver", "--frame_num", "--lora_path",
                        "--using_merged_ckpt", "--start_from_ref", "--drop_motion_noisy", "--use_dataset",
                        "--dataset_sample_idx", "--use_prompt_extend", "--enable_tts", "--pose_video"}) {
    EXPECT_TRUE(HasWarning(c, f)) << f;
  }
}

TEST(CliParse, LaunchScriptCommandLineParses) {
  // The flags of infinite_inference_single_gpu.sh, verbatim.
  const ParsedCommand c = MustParse(
      {"--ulysses_size", "1", "--task", "s2v-14B", "--size", "704*384", "--base_seed", "420", "--training_config",
       "liveavatar/configs/s2v_causal_sft.yaml", "--offload_model", "True", "--convert_model_dtype", "--prompt",
       "A dwarven blacksmith", "--image", "examples/dwarven_blacksmith.jpg", "--audio",
       "examples/dwarven_blacksmith.wav", "--infer_frames", "48", "--load_lora", "--lora_path_dmd",
       "Quark-Vision/Live-Avatar", "--sample_steps", "4", "--sample_guide_scale", "0", "--num_clip", "10000",
       "--num_gpus_dit", "1", "--sample_solver", "euler", "--single_gpu", "--ckpt_dir", "ckpt/Wan2.2-S2V-14B/",
       "--fp8"});
  EXPECT_EQ(c.command, Command::kGenerate);  // a leading flag means generate
  EXPECT_EQ(c.run.generate.size, "704*384");
  EXPECT_TRUE(*c.run.memory.offload_model);
  EXPECT_TRUE(c.run.memory.fp8);
  EXPECT_TRUE(c.run.parallel.single_gpu);
  EXPECT_EQ(c.run.parallel.num_gpus_dit, 1);
  ASSERT_EQ(c.warnings.size(), 1u);  // only --sample_guide_scale
  EXPECT_TRUE(HasWarning(c, "--sample_guide_scale"));
  EXPECT_TRUE(HasWarning(c, "ignored by the reference"));
}

TEST(CliParse, EverySupportedSizeIsAccepted) {
  EXPECT_EQ(pipeline::SupportedSizes().size(), 12u);
  for (const auto& s : pipeline::SupportedSizes()) {
    const ParsedCommand c = MustParse({"generate", "--size", s});
    EXPECT_EQ(c.run.generate.size, s);
    auto wh = pipeline::ParseSize(s);
    ASSERT_TRUE(wh.ok());
    EXPECT_EQ(std::to_string(wh->first) + "*" + std::to_string(wh->second), s);
  }
}

TEST(CliParse, BadSizeListsTheValidOnes) {
  for (const char* bad : {"720x400", "100*100", "400*720", "720*400 ", "1280x720"}) {
    const std::string msg = ParseError({"generate", "--size", bad});
    EXPECT_NE(msg.find("--size"), std::string::npos) << msg;
    for (const auto& s : pipeline::SupportedSizes()) EXPECT_NE(msg.find(s), std::string::npos) << msg;
  }
}

TEST(CliParse, InferFramesMustBeAPositiveMultipleOfFour) {
  for (const char* good : {"4", "12", "48", "80"}) {
    EXPECT_EQ(MustParse({"generate", "--infer_frames", good}).run.generate.infer_frames, std::stoll(good));
  }
  for (const char* bad : {"50", "0", "-4", "1"}) {
    const std::string msg = ParseError({"generate", "--infer_frames", bad});
    EXPECT_NE(msg.find("--infer_frames"), std::string::npos) << msg;
    EXPECT_NE(msg.find("multiple of 4"), std::string::npos) << msg;
  }
  EXPECT_NE(ParseError({"generate", "--infer_frames", "abc"}).find("--infer_frames"), std::string::npos);
}

TEST(CliParse, Str2BoolLikeTheReference) {
  const std::vector<std::pair<std::string, bool>> cases = {
      {"True", true}, {"False", false}, {"true", true}, {"false", false}, {"1", true},  {"0", false},
      {"yes", true},  {"no", false},    {"Y", true},    {"n", false},     {"T", true},  {"f", false}};
  for (const auto& [text, value] : cases) {
    const ParsedCommand c = MustParse({"generate", "--offload_model", text});
    ASSERT_TRUE(c.run.memory.offload_model.has_value()) << text;
    EXPECT_EQ(*c.run.memory.offload_model, value) << text;
  }
  for (const char* bad : {"maybe", "2", "on"}) {
    const std::string msg = ParseError({"generate", "--offload_model", bad});
    EXPECT_NE(msg.find("--offload_model"), std::string::npos) << msg;
    EXPECT_NE(msg.find("True/False"), std::string::npos) << msg;
  }
}

TEST(CliParse, SwitchesAndNegations) {
  EXPECT_TRUE(MustParse({"generate", "--fp8"}).run.memory.fp8);
  EXPECT_FALSE(MustParse({"generate", "--no_fp8"}).run.memory.fp8);
  EXPECT_TRUE(MustParse({"generate", "--load_lora"}).run.generate.load_lora);
  EXPECT_FALSE(MustParse({"generate", "--no_load_lora"}).run.generate.load_lora);
  EXPECT_FALSE(MustParse({"generate", "--no_convert_model_dtype"}).run.memory.convert_model_dtype);
  EXPECT_TRUE(MustParse({"generate", "--t5_cpu"}).run.memory.t5_cpu);
}

TEST(CliParse, ValueChecks) {
  EXPECT_NE(ParseError({"generate", "--task", "t2v-A14B"}).find("--task"), std::string::npos);
  EXPECT_NE(ParseError({"generate", "--sample_solver", "ddim"}).find("--sample_solver"), std::string::npos);
  EXPECT_NE(ParseError({"generate", "--num_clip", "0"}).find("--num_clip"), std::string::npos);
  EXPECT_NE(ParseError({"generate", "--sample_steps", "0"}).find("--sample_steps"), std::string::npos);
  EXPECT_NE(ParseError({"generate", "--rolling_sink_d", "3"}).find("--rolling_sink_d"), std::string::npos);
  EXPECT_NE(ParseError({"generate", "--crf", "60"}).find("--crf"), std::string::npos);
  EXPECT_NE(ParseError({"generate", "--preset", "turbo"}).find("--preset"), std::string::npos);
  EXPECT_NE(ParseError({"generate", "--ulysses_size", "0"}).find("--ulysses_size"), std::string::npos);
  EXPECT_NE(ParseError({"generate", "--no_such_flag"}).find("no_such_flag"), std::string::npos);
  EXPECT_NE(ParseError({"generate", "--image"}).find("--image"), std::string::npos);
  // Several bad flags: one error naming each.
  const std::string msg = ParseError({"generate", "--size", "1*1", "--infer_frames", "6"});
  EXPECT_NE(msg.find("--size"), std::string::npos);
  EXPECT_NE(msg.find("--infer_frames"), std::string::npos);
}

TEST(CliParse, IgnoredSolverWarns) {
  const ParsedCommand c = MustParse({"generate", "--sample_solver", "dpm++"});
  EXPECT_TRUE(HasWarning(c, "--sample_solver dpm++"));
  EXPECT_TRUE(MustParse({"generate", "--sample_solver", "euler"}).warnings.empty());
}

TEST(CliParse, Subcommands) {
  EXPECT_EQ(MustParse({"batch", "--sample_list", "s.json", "--overwrite"}).command, Command::kBatch);
  EXPECT_TRUE(MustParse({"batch", "--sample_list", "s.json", "--overwrite"}).run.output.overwrite);
  EXPECT_NE(ParseError({"batch"}).find("--sample_list"), std::string::npos);
  EXPECT_EQ(MustParse({"plan", "--size", "720*400", "--nproc_per_node", "5"}).command, Command::kPlan);
  EXPECT_EQ(MustParse({"bench", "--sample_steps", "2"}).command, Command::kBench);

  const ParsedCommand d = MustParse({"doctor", "--ckpt_dir", "/c", "--lora_path_dmd", "l.safetensors"});
  EXPECT_EQ(d.command, Command::kDoctor);
  EXPECT_EQ(d.doctor.ckpt_dir, "/c");
  EXPECT_EQ(d.doctor.lora_path, "l.safetensors");
  // doctor takes the flags of a run (it checks what that run would use), with generate's defaults.
  EXPECT_EQ(MustParse({"doctor"}).doctor.ckpt_dir, pipeline::GenerateOptions().ckpt_dir);
  const ParsedCommand dr = MustParse({"doctor", "--image", "i.png", "--size", "720*400", "--nproc_per_node", "2",
                                      "--json"});
  EXPECT_EQ(dr.run.generate.image, "i.png");
  EXPECT_EQ(dr.run.parallel.nproc_per_node, 2);
  EXPECT_TRUE(dr.doctor.json);
  EXPECT_NE(ParseError({"doctor", "--size", "1*1"}).find("--size"), std::string::npos);

  const ParsedCommand cv = MustParse({"convert", "in.pth", "out.safetensors", "--dtype", "bf16"});
  EXPECT_EQ(cv.command, Command::kConvert);
  EXPECT_EQ(cv.convert.input, "in.pth");
  EXPECT_EQ(cv.convert.output, "out.safetensors");
  EXPECT_EQ(cv.convert.dtype, "bf16");
  EXPECT_NE(ParseError({"convert", "in.pth", "out.safetensors", "--dtype", "int4"}).find("--dtype"),
            std::string::npos);
  EXPECT_FALSE(ParseCommandLine(std::vector<std::string>{"convert", "in.pth"}).ok());

  const ParsedCommand mt = MustParse({"make-tiny", "--out", "/tmp/t", "--seed", "7", "--log-level", "warn"});
  EXPECT_EQ(mt.command, Command::kMakeTiny);
  EXPECT_EQ(mt.make_tiny.out, "/tmp/t");
  EXPECT_EQ(mt.make_tiny.seed, 7u);
  EXPECT_EQ(mt.log_level, "warn");
  EXPECT_NE(ParseError({"make-tiny"}).find("--out"), std::string::npos);
  // Flags of another subcommand are rejected.
  EXPECT_FALSE(ParseCommandLine(std::vector<std::string>{"doctor", "--ckpt_dir", "/c", "--overwrite"}).ok());
  EXPECT_FALSE(ParseCommandLine(std::vector<std::string>{"make-tiny", "--out", "/t", "--json"}).ok());
  EXPECT_FALSE(ParseCommandLine(std::vector<std::string>{"frobnicate"}).ok());
  EXPECT_FALSE(ParseCommandLine(std::vector<std::string>{}).ok());
}

TEST(CliParse, HelpIsGrouped) {
  const ParsedCommand h = MustParse({"generate", "--help"});
  EXPECT_EQ(h.command, Command::kHelp);
  EXPECT_EQ(h.help_text, HelpText("generate"));
  size_t last = 0;
  for (const char* group : {"Inputs:", "Model:", "Sampling:", "Parallelism:", "Memory:", "Output:", "Logging:"}) {
    const size_t at = h.help_text.find(group);
    ASSERT_NE(at, std::string::npos) << group;
    EXPECT_GT(at, last) << group << " out of order";
    last = at;
  }
  const ParsedCommand top = MustParse({"--help"});
  EXPECT_EQ(top.command, Command::kHelp);
  for (const auto& name : SubcommandNames()) EXPECT_NE(top.help_text.find(name), std::string::npos) << name;
}

TEST(CliParse, GenerateKnowsEveryReferenceFlag) {
  // minimal_inference/s2v_streaming_interact.py (reference spec §1.2) plus our own flags.
  const std::string help = HelpText("generate");
  for (const char* f :
       {"--task", "--size", "--frame_num", "--ckpt_dir", "--offload_model", "--ulysses_size", "--t5_fsdp", "--t5_cpu",
        "--dit_fsdp", "--save_file", "--save_dir", "--prompt", "--use_prompt_extend", "--prompt_extend_method",
        "--prompt_extend_model", "--prompt_extend_target_lang", "--base_seed", "--image", "--sample_solver",
        "--sample_steps", "--sample_shift", "--sample_guide_scale", "--convert_model_dtype", "--num_clip", "--audio",
        "--enable_tts", "--tts_prompt_audio", "--tts_prompt_text", "--tts_text", "--pose_video", "--start_from_ref",
        "--infer_frames", "--load_lora", "--lora_path", "--lora_path_dmd", "--training_config", "--use_dataset",
        "--dataset_sample_idx", "--drop_motion_noisy", "--single_gpu", "--using_merged_ckpt", "--num_gpus_dit",
        "--enable_vae_parallel", "--offload_kv_cache", "--enable_online_decode", "--fp8", "--log-level", "--threads",
        "--crf", "--preset", "--report", "--rolling_sink_d", "--fsdp_prefetch", "--max_gpu_mem_gb", "--auto_plan",
        "--nproc_per_node", "--vae_tiling"}) {
    const bool listed = help.find(std::string("  ") + f + " ") != std::string::npos ||
                        help.find(std::string("  ") + f + ",") != std::string::npos ||
                        help.find(std::string("  ") + f + "\n") != std::string::npos;
    EXPECT_TRUE(listed) << f;
  }
}

}  // namespace
}  // namespace liveavatar::cli
